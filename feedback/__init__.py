"""The event contract, topics, durable producer and embedded broker of rlhf-loop.

Imports nothing of ours: serving and learner import it.
"""
