//! `volume_import`: a new volume from `raw+size` on stdin (the request came in
//! the environment).

use std::io::Read;

use rbdx_core::ops::{self, ImageSpec};

use crate::error::{Error, Result};
use crate::helper::{Helper, same_base};
use crate::image_of;

/// The new volume's volname.
pub type Output = String;

/// Makes `volname` (another free name of its VM if it is taken and
/// `allow_rename`) from the stream. A stream cut short leaves no volume.
///
/// # Errors
/// [`Error::VolumeExists`], [`Error::Stream`], [`Error::StreamShort`]; Ceph
/// errors.
pub fn run(h: &Helper, volname: &str, allow_rename: bool, input: &mut impl Read) -> Result<Output> {
    let (mut name, vmid) = image_of(volname)?;
    if h.name_taken(&name)? {
        if !allow_rename {
            return Err(Error::VolumeExists(name));
        }
        name = h.free_name(vmid)?;
    }
    let mut header = [0u8; 8];
    input
        .read_exact(&mut header)
        .map_err(|source| Error::Stream { what: "reading the size header", source })?;
    let size = u64::from_le_bytes(header);
    let spec = h.spec(&name)?;
    ops::create(&h.cluster, &spec, size, &h.create_options())?;
    if let Err(e) = fill(h, &spec, size, input) {
        let _ = ops::remove(&h.cluster, &spec, ops::RemoveOptions::default());
        return Err(e);
    }
    Ok(same_base(volname, &name))
}

/// Writes the stream's `size` bytes into the new image.
fn fill(h: &Helper, spec: &ImageSpec, size: u64, input: &mut impl Read) -> Result<()> {
    let io = ops::ioctx(&h.cluster, spec)?;
    let img = io.open(&spec.name)?;
    let mut body = input.take(size);
    ops::write_sparse(&img, &mut body)?;
    // A stream cut short (the sender died) must not pass for the volume.
    if body.limit() > 0 {
        return Err(Error::StreamShort { got: size - body.limit(), size });
    }
    Ok(())
}
