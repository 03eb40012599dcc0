"""reactor: a port of mio."""
