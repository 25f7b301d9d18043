"""Interop with the tools researchers already use: NIfTI (SimpleITK) and MONAI datalists."""
