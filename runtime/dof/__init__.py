"""Classical analysis of 9-frame focal stacks (frame 0 focused near, frame 8 far, frames linear in diopters):
a per-pixel focus measure (:mod:`runtime.dof.focus_measure`), an edge-aware all-in-focus fusion
(:mod:`runtime.dof.all_in_focus`) and depth from focus with sub-frame refinement, a confidence map and an
edge-aware fill of unreliable pixels (:mod:`runtime.dof.depth`). Everything is plain torch on the input's
device, so it runs on CPU and on an accelerator; importing this package imports nothing heavy.

On top of it: both stages in one call (:mod:`runtime.dof.analysis`), depth-of-field re-rendering
(:mod:`runtime.dof.aperture`, :mod:`runtime.dof.bokeh`), the viewers' preview grid and page
(:mod:`runtime.dof.preview`, :mod:`runtime.dof.viewer_page`, :mod:`runtime.dof.colormap`), `refocus edit`
(:mod:`runtime.dof.edit`) and the views `refocus run` adds to its output (:mod:`runtime.dof.stack_views`).
"""
