"""Network architectures shared by several methods."""
