"""Handing checkpoints to other tools: a clean HF directory (`hf`), GGUF for llama.cpp
(`gguf`), and the OLMo checkpoint names with their listing (`checkpoints`)."""
