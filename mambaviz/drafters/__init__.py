"""Drafters behind one interface: `mamba` (recurrent state), `transformer` (KV cache), `none`."""
