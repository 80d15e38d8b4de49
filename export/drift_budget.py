"""The LPIPS (alex) drift a reduced-precision or quantized stack may show against the fp32 model:
(median frame, worst frame). One number for every route that quantizes (`refocus quantize`'s
recipes, the ExecuTorch exporter's int8 programs); plain data, so the CLI's recipe table can read
it without importing torch."""

QUANTIZED_DRIFT_LPIPS = (0.02, 0.05)
