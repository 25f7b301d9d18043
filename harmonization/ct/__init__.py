"""Low-dose CT: projection-domain dose simulation, denoisers, image-quality metrics.

Modules (import what you need; this package import stays light for the CLI):

- ``simulate``: HU <-> attenuation, parallel-beam projection/FBP (scikit-image), Poisson + electronic
  noise, noise prior, :func:`simulate_low_dose` over slices in worker processes.
- ``phantoms``: ellipse phantom volumes with flat and edge ROIs.
- ``denoisers``: the ``DENOISERS`` registry and :func:`create_denoiser` (fbp, gaussian, bilateral,
  nlm, bm3d, redcnn, two_stage), :func:`tune` for fair baselines.
- ``networks`` / ``learned`` / ``training``: RED-CNN and the two-stage cross-domain model, inference,
  resumable training.
- ``quality``: PSNR/SSIM/RMSE on an HU window in the FOV, noise SD, NPS, edge MTF / MTF50.
- ``evaluation`` / ``report`` / ``apply`` / ``cli``: comparisons, HTML report, DICOM batch paths,
  ``medbench denoise ...``.
"""
