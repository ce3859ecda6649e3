"""The Hugging Face hub cache (``huggingface_hub``; used by transformers, diffusers, datasets, ...)."""
