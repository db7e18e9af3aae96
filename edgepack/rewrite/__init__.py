"""Rewriting a model for a target's operator set (`pack --ops-allowed SPEC`) and fixing its
symbolic dims (`pack --fix-dim NAME=VALUE`).

spec.py says which operators a target takes (an onnxruntime reduced-build config, or a provider
named by `ops_for_ep`); one module per family of rules (norm.py, functions.py, pad.py,
resize.py, folding.py, variadic.py, inference.py, softmax.py) turns one disallowed node into
allowed ones; driver.py applies them until every node is allowed and checks the result
numerically against the model as given; fixdim.py fixes symbolic dims with onnxruntime's own
helpers.
"""

from edgepack.rewrite.driver import Transformed, check_rewrite, transform_model
from edgepack.rewrite.fixdim import FixDim, parse_fix_dim
from edgepack.rewrite.spec import OpsAllowed, load_ops_allowed, ops_for_ep

__all__ = ["FixDim", "OpsAllowed", "Transformed", "check_rewrite", "load_ops_allowed",
           "ops_for_ep", "parse_fix_dim", "transform_model"]
