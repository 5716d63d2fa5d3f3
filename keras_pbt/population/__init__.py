"""`Population`: members on the machine's devices, trained at once in threads.

Members and their restarts, their input pipelines, device slices, threads,
progress, checkpointing of members, and what a finished population hands back.
"""
