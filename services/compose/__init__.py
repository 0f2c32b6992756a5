"""Composing beyond one take: long pieces, variations, loops, A/B, any format.

Everything here is built on the generation service (so on every engine) and the library.
"""
