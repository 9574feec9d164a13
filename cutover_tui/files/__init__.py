"""Files the console reads and writes beside the database: the deploy env file, atomically."""
