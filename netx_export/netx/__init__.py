"""The NetX HDF5 file: write, read, validate, describe; the test images a file names."""
