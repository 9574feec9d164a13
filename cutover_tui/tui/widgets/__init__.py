"""Small widgets the screens are built from; each renders one slice of a `Status`."""
