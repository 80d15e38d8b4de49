"""Classical analysis of 9-frame focal stacks (frame 0 focused near, frame 8 far, frames linear in diopters):
a per-pixel focus measure (:mod:`refocus_edge.dof.focus_measure`), an edge-aware all-in-focus fusion
(:mod:`refocus_edge.dof.all_in_focus`) and depth from focus with sub-frame refinement, a confidence map and an
edge-aware fill of unreliable pixels (:mod:`refocus_edge.dof.depth`). Everything is plain torch on the input's
device, so it runs on CPU and on an accelerator; importing this package imports nothing heavy.

On top of it: both stages in one call (:mod:`refocus_edge.dof.analysis`), depth-of-field re-rendering
(:mod:`refocus_edge.dof.aperture`, :mod:`refocus_edge.dof.bokeh`), the viewers' preview grid and page
(:mod:`refocus_edge.dof.preview`, :mod:`refocus_edge.dof.viewer_page`, :mod:`refocus_edge.dof.colormap`), `refocus edit`
(:mod:`refocus_edge.dof.edit`) and the views `refocus run` adds to its output (:mod:`refocus_edge.dof.stack_views`).
"""
