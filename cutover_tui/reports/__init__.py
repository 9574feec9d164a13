"""Reports: the §4 shapes, where they are kept (files and rows), how they read, how two compare."""
