"""Version of tensorflow_dcn and the TensorFlow release its op library is built against."""

__version__ = "0.1.0"
# Custom ops are tied to TensorFlow's C++ ABI: the library only loads into this minor release.
TENSORFLOW_VERSION = "2.21"
