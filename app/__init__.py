"""What `refocus run` does with a photo: sample its focal stack (runtime), derive the depth-of-field
views (refocus_edge.dof), and publish the result folder (frames, sweep, viewer, run.json)."""
