"""A scikit-learn random forest on the iris data set, converted to ONNX with skl2onnx.

    python examples/iris_forest.py -o iris_forest.onnx

ZipMap is turned off: with it the probabilities come out as a sequence of maps, which no device
runtime compares as a tensor (`edgepack pack` says so if you forget).
"""

import argparse
from pathlib import Path


def make_onnx(zipmap: bool = False) -> bytes:
    import numpy as np
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    iris = load_iris()
    X = iris.data.astype(np.float32)
    forest = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0)
    forest.fit(X, iris.target)
    onx = to_onnx(forest, X[:1], options={"zipmap": zipmap}, target_opset={"": 17, "ai.onnx.ml": 3})
    return onx.SerializeToString()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("iris_forest.onnx"))
    parser.add_argument("--zipmap", action="store_true", help="keep ZipMap (for error demos)")
    args = parser.parse_args()
    args.output.write_bytes(make_onnx(args.zipmap))
    print(args.output)


if __name__ == "__main__":
    main()
