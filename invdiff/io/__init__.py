"""Reading and writing scan files: fastMRI HDF5, NIfTI, DICOM, netCDF / zarr, NumPy, PNG / TIFF.

Every reader returns a :class:`Scan` (a tensor plus the metadata that lets results go back into the same format
family); every writer is atomic (a temporary file beside the target, renamed on success), refuses to replace an
existing file unless ``overwrite=True`` and never touches the input. Bad files raise :class:`ScanError` with a
one-line message that names the file and the problem.

Format by suffix (and by content where the suffix is ambiguous, e.g. an HDF5 signature in a ``.nc`` file):

==============  ===========================================  ==============================================
format          suffixes                                     notes
==============  ===========================================  ==============================================
``fastmri``     ``.h5``, ``.hdf5``                           ``kspace``, ``ismrmrd_header``, ``mask``,
                                                             ``reconstruction_rss`` / ``_esc``, attributes
``nifti``       ``.nii``, ``.nii.gz``                        nibabel; affine, zooms, scaling, orientation
``dicom``       ``.dcm``, a folder of DICOM files            pydicom; modality LUT (HU), series by position
``netcdf``      ``.nc``, ``.nc4``, ``.cdf``                  xarray; dims, coordinates and attributes kept
``zarr``        ``.zarr`` (a folder)                         xarray + zarr (``pip install zarr``)
``npy/npz``     ``.npy``, ``.npz``                           NumPy
``png/tiff``    ``.png``, ``.tif``, ``.tiff``                Pillow / tifffile
==============  ===========================================  ==============================================
"""

from ._scan import Scan, ScanError
from ._formats import FORMATS, describe, detect_format, output_paths, read, split_name, write, write_results

__all__ = ["Scan", "ScanError", "FORMATS", "read", "write", "write_results", "output_paths", "describe",
           "detect_format", "split_name"]
