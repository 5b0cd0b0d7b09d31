"""What the app keeps of generated images: the files and the gallery index."""
