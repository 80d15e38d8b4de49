"""`refocus distill-decoder`: the tiny temporal decoder (runtime/tiny_decoder.py), distilled from a
model's own VAE decoder on the latents that model produces, gated by LPIPS against that decoder's
frames and written into the model folder as `tiny_decoder/`."""
