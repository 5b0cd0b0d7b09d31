"""Parts of the Images page: the controls column, the image view, the init image and the gallery strip."""
