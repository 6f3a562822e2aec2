"""``minigen.cuda``: is a CUDA GPU usable here? (CuPy is optional.)"""

from __future__ import annotations

from minigen import backend


def is_available() -> bool:
    """True when CuPy is installed and a CUDA device is visible."""
    return backend.cuda_is_available()


def device_count() -> int:
    if not is_available():
        return 0
    import cupy

    return cupy.cuda.runtime.getDeviceCount()


def synchronize() -> None:
    """Wait for queued GPU work to finish (for timing); a no-op without CUDA."""
    if is_available():
        import cupy

        cupy.cuda.Device().synchronize()
