"""Running a bundle: the native edgepack-runner (built, cached, located) and the Python engine."""
