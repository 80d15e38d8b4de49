"""Classical analysis of 9-frame focal stacks (frame 0 focused near, frame 8 far, frames linear in diopters):
a per-pixel focus measure (:mod:`runtime.dof.focus_measure`), an edge-aware all-in-focus fusion
(:mod:`runtime.dof.all_in_focus`) and depth from focus with sub-frame refinement, a confidence map and an
edge-aware fill of unreliable pixels (:mod:`runtime.dof.depth`). Everything is plain torch on the input's
device, so it runs on CPU and on an accelerator; importing this package imports nothing heavy.
"""
