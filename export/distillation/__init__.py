"""Few-step distillation of a guided refocuser into a guidance-free student.

schedule.py      the student's sigmas, expressed as its own scheduler config
teacher.py       the teacher's guided Euler solve, batched, over any sigma grid
trajectories.py  teacher trajectories recorded once into a resumable cache
data.py          where input photos come from (synthetic stacks or the real dataset)
objective.py     the per-step regression target and loss
train.py         the training loop: EMA, checkpoints, resume, progress
student.py       writing the student as a model folder like any other
"""
