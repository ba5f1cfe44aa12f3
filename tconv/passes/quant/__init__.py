"""Post-training quantisation passes (`tconv-quantize`)."""
