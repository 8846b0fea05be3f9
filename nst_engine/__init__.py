"""Neural style transfer engine: Gatys et al. with the original Oxford VGG19 weights."""
