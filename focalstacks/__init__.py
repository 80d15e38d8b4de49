"""Focal stacks for Refocus Edge: synthetic rendering and the learn2refocus loader.

A focal stack has 9 frames, index 0 focused near (20 D = 5 cm, iPhone lens
position 0.0) and index 8 focused far (0 D = infinity), planes linear in
diopters.  Arrays are float32 in [0, 1]; datasets return torch tensors
``frames [9, 3, H, W]``.

Modules (import from them directly; importing this package loads nothing heavy):

``focalstacks.lens``
    ``LensConfig(num_positions=9, near_diopters=20.0, far_diopters=0.0,
    max_blur_fraction=0.05)`` (frozen), ``focus_planes(cfg) -> ndarray[9]``,
    ``blur_radius_px(scene_diopters, focus_diopters, width, cfg)``.
``focalstacks.render``
    ``Layer(rgb, alpha, diopters)``; ``render_layers(layers, cfg) -> [9,H,W,3]``
    (disk-blur + back-to-front "over" compositing of premultiplied layers);
    ``render_from_depth(aif, depth_diopters, cfg, num_slices=16)``;
    ``composite_sharp(layers, cfg)``, ``front_depth(layers, cfg)``, ``disk_kernel(r)``.
``focalstacks.scenes``
    ``make_scene(seed, size=(128, 128), cfg) -> Scene(layers, aif, depth_diopters, seed)``:
    procedural scenes textured with scikit-image's bundled photos.
``focalstacks.synthetic``
    ``SYNTHETIC_SPLITS`` (train: seeds 0..999_999; heldout: 10_000_000 + i,
    i < 256), ``SyntheticFocalStacks(split, size, length, cfg)`` ->
    ``{"frames", "depth", "seed"}``, ``render_cache(split, count, size, path)``
    -> uint8 ``[N, 9, H, W, 3]`` .npy, ``CachedFocalStacks(path)``.
``focalstacks.photo_stacks``
    ``PhotoFocalStacks(size, length, cfg)`` -> ``{"frames", "depth", "seed", "name"}``: an evaluation
    set of 20 stacks rendered from whole scikit-image photographs that no training scene uses
    (measured stereo depth for the motorcycle, a documented heuristic depth for the others).
``focalstacks.learn2refocus``
    ``Learn2RefocusStacks(root, size=(128, 128))`` -> ``{"frames", "scene"}``
    for ``<root>/**/FSK_*/**/focal_position_000{0..8}_frame_0000.jpg``.
"""
