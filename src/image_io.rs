//! Tensors to PNG/GIF and image grids.
