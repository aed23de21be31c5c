//! Mappings of device memory, bounds-checked access, and typed register blocks.
//! The only module of the UIO layer with `unsafe`.
//!
//! - A UIO map N is mapped from `/dev/uioN` at file offset N × page size (the
//!   UIO convention); a PCI BAR from the sysfs `resourceN` file at offset 0.
//!   For `uio_pci_generic`, UIO map N is the N-th *memory* BAR, not BAR N,
//!   so use [`Mapping::pci_bar`] when you mean a BAR.
//! - The mapping is `MAP_SHARED` through memmap2's [`MmapRaw`]: no `&[u8]`
//!   is ever formed over device memory (that would let the compiler read or
//!   merge accesses at will); every access is a volatile load or store of the
//!   requested width through a raw pointer.
//! - memmap2 turns `MAP_FAILED` into an `io::Error` (we never see a
//!   null-vs-`MAP_FAILED` confusion) and unmaps on drop. Everything handed out
//!   borrows the [`Mapping`], so no reference outlives the unmap.
//! - Like ixy.rs, every offset is checked against the mapping length, but as a
//!   `Result` instead of an assert: a bad offset from a request is an error, not
//!   a crash and never UB.
//! - [`Mapping`] is `Send` but not `Sync`: volatile accesses from two threads
//!   to ordinary memory (a file-backed test mapping) would be a data race.

use crate::error::{Result, UioError};
use crate::sysfs::UioDevice;
use memmap2::{MmapOptions, MmapRaw};
use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::path::Path;

/// Marks a type that may be handed out as `&Self` over device memory by
/// [`Mapping::block`].
///
/// # Safety
/// Implement it only for a `#[repr(C)]` (or `#[repr(transparent)]`) type that
/// - consists only of `UnsafeCell`-based volatile cells (volatile-register's
///   `RO`/`RW`/`WO`, `vcell::VolatileCell`) and arrays of them, so every bit
///   pattern is valid and the device may change the memory behind `&Self`;
/// - has no `Drop` glue and no pointers or references;
/// - touches no memory outside its own `size_of::<Self>()` bytes;
/// - tolerates spurious reads of any of its registers (cells reached through
///   references may be read speculatively: volatile-register issue #10), or
///   documents that its registers have no read side effects.
pub unsafe trait RegisterBlock {}

/// A mapping of device memory (or, for tests, of any regular file).
#[derive(Debug)]
pub struct Mapping {
    raw: MmapRaw,
    what: String,
    phys: Option<u64>,
    /// `!Sync` (see the module docs); still `Send`.
    _not_sync: PhantomData<Cell<()>>,
}

fn page_size() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(p)) if p > 0 => p as u64,
        _ => 4096,
    }
}

fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new().read(true).write(true).open(path).map_err(|e| UioError::io(path, e))
}

impl Mapping {
    fn map(file: &File, what: String, offset: u64, len: u64, phys: Option<u64>) -> Result<Self> {
        if len == 0 {
            return Err(UioError::BadMapRange { what, offset, len, why: "zero length" });
        }
        let Ok(len_usize) = usize::try_from(len) else {
            return Err(UioError::BadMapRange { what, offset, len, why: "larger than the address space" });
        };
        // For a regular file (a BAR's resourceN reports the BAR size), mapping
        // beyond its end would turn accesses into SIGBUS: refuse up front.
        let meta = file.metadata().map_err(|e| UioError::io(&what, e))?;
        if meta.is_file() && offset.checked_add(len).is_none_or(|end| end > meta.len()) {
            return Err(UioError::BadMapRange { what, offset, len, why: "extends past the end of the file" });
        }
        let raw = MmapOptions::new().offset(offset).len(len_usize).map_raw(file).map_err(|source| UioError::Map {
            what: what.clone(),
            offset,
            len,
            source,
        })?;
        tracing::debug!(mapping = %what, offset = format_args!("{offset:#x}"), len = format_args!("{len:#x}"), "mapped");
        Ok(Self { raw, what, phys, _not_sync: PhantomData })
    }

    /// Maps UIO map `index` of `device` through its device node.
    ///
    /// The mapping starts at the page that holds the memory; the memory itself
    /// starts [`crate::UioMap::offset`] bytes in (0 for every physical map on
    /// current kernels, which refuse unaligned physical maps), so add that
    /// offset to register offsets. A map smaller than a page cannot be mapped
    /// (the kernel refuses a VMA larger than the map): that shows as
    /// [`UioError::Map`] naming the map.
    ///
    /// # Errors
    /// [`UioError::NoSuchMap`], an open error naming `/dev/uioN`, or the mmap error.
    pub fn uio_map(device: &UioDevice, index: u32) -> Result<Self> {
        let map = device.map(index)?;
        let file = open_rw(&device.dev_node)?;
        let what = format!("{} map {index}", device.dev_node.display());
        let offset = u64::from(index) * page_size();
        Self::map(&file, what, offset, map.size, Some(map.addr))
    }

    /// Maps PCI BAR `bar` of `device` through sysfs `resourceN`.
    ///
    /// # Errors
    /// [`UioError::NoSuchBar`] for a non-PCI device or an absent / I/O-port
    /// BAR, or the open / mmap error naming the resource file.
    pub fn pci_bar(device: &UioDevice, bar: u8) -> Result<Self> {
        let no = |why| UioError::NoSuchBar { device: device.describe(), bar, why };
        let pci = device.pci.as_ref().ok_or_else(|| no("not a PCI device"))?;
        let info = pci.bars.iter().find(|b| b.index == bar).ok_or_else(|| no("BAR is not implemented (size 0)"))?;
        if !info.is_memory() {
            return Err(no("BAR is an I/O port range, not memory"));
        }
        let file = open_rw(&info.path)?;
        Self::map(&file, info.path.display().to_string(), 0, info.size, Some(info.start))
    }

    /// Maps `len` bytes of any file at `offset`. For tests (a 4 KiB tempfile
    /// stands in for a BAR) and for file-backed devices.
    ///
    /// # Errors
    /// Open errors naming `path`, a zero or past-the-end range, or the mmap error.
    pub fn file(path: &Path, offset: u64, len: u64) -> Result<Self> {
        let file = open_rw(path)?;
        Self::map(&file, path.display().to_string(), offset, len, None)
    }

    /// Length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether the mapping is empty (never: zero-length maps are refused).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.raw.len() == 0
    }

    /// What is mapped (`/dev/uio0 map 0`, `/sys/.../resource0`), for logs.
    #[must_use]
    pub fn describe(&self) -> &str {
        &self.what
    }

    /// The physical address of the mapped memory, when known (UIO map `addr`,
    /// BAR start).
    #[must_use]
    pub fn phys_addr(&self) -> Option<u64> {
        self.phys
    }

    /// Checks a `width`-byte access at `offset` and returns its address.
    fn checked(&self, offset: usize, width: usize) -> Result<*mut u8> {
        if offset.checked_add(width).is_none_or(|end| end > self.len()) {
            return Err(UioError::OutOfBounds { mapping: self.what.clone(), offset, width, len: self.len() });
        }
        let ptr = self.raw.as_mut_ptr().wrapping_add(offset);
        if !(ptr as usize).is_multiple_of(width) {
            return Err(UioError::Misaligned { mapping: self.what.clone(), offset, width });
        }
        Ok(ptr)
    }

    /// Volatile 8-bit load at byte `offset`.
    ///
    /// # Errors
    /// [`UioError::OutOfBounds`].
    pub fn read8(&self, offset: usize) -> Result<u8> {
        let p = self.checked(offset, 1)?;
        // SAFETY: `checked` proved offset..offset+1 lies inside the live mapping
        // (which `&self` keeps mapped); u8 has no alignment requirement and any
        // bit pattern is valid.
        Ok(unsafe { p.read_volatile() })
    }

    /// Volatile 16-bit load at byte `offset` (native endian).
    ///
    /// # Errors
    /// [`UioError::OutOfBounds`] or [`UioError::Misaligned`].
    pub fn read16(&self, offset: usize) -> Result<u16> {
        let p = self.checked(offset, 2)?;
        // SAFETY: in bounds of the live mapping and 2-byte aligned (`checked`);
        // any bit pattern is a valid u16.
        Ok(unsafe { p.cast::<u16>().read_volatile() })
    }

    /// Volatile 32-bit load at byte `offset` (native endian).
    ///
    /// # Errors
    /// [`UioError::OutOfBounds`] or [`UioError::Misaligned`].
    pub fn read32(&self, offset: usize) -> Result<u32> {
        let p = self.checked(offset, 4)?;
        // SAFETY: in bounds of the live mapping and 4-byte aligned (`checked`);
        // any bit pattern is a valid u32.
        Ok(unsafe { p.cast::<u32>().read_volatile() })
    }

    /// Volatile 8-bit store at byte `offset`.
    ///
    /// # Errors
    /// [`UioError::OutOfBounds`].
    pub fn write8(&self, offset: usize, value: u8) -> Result<()> {
        let p = self.checked(offset, 1)?;
        // SAFETY: in bounds of the live, writable (MAP_SHARED, opened O_RDWR)
        // mapping; no Rust reference covers these bytes (we never form one).
        unsafe { p.write_volatile(value) };
        Ok(())
    }

    /// Volatile 16-bit store at byte `offset` (native endian).
    ///
    /// # Errors
    /// [`UioError::OutOfBounds`] or [`UioError::Misaligned`].
    pub fn write16(&self, offset: usize, value: u16) -> Result<()> {
        let p = self.checked(offset, 2)?;
        // SAFETY: in bounds, 2-byte aligned, writable mapping; no Rust reference
        // covers these bytes except UnsafeCell-based register blocks.
        unsafe { p.cast::<u16>().write_volatile(value) };
        Ok(())
    }

    /// Volatile 32-bit store at byte `offset` (native endian).
    ///
    /// # Errors
    /// [`UioError::OutOfBounds`] or [`UioError::Misaligned`].
    pub fn write32(&self, offset: usize, value: u32) -> Result<()> {
        let p = self.checked(offset, 4)?;
        // SAFETY: in bounds, 4-byte aligned, writable mapping; no Rust reference
        // covers these bytes except UnsafeCell-based register blocks.
        unsafe { p.cast::<u32>().write_volatile(value) };
        Ok(())
    }

    /// A typed register block at byte `offset`, borrowed from the mapping (so
    /// it cannot outlive the unmap).
    ///
    /// # Errors
    /// [`UioError::BlockTooLarge`] when the mapping is shorter than
    /// `offset + size_of::<T>()`, [`UioError::BlockMisaligned`] when the address
    /// is not aligned for `T`.
    pub fn block<T: RegisterBlock>(&self, offset: usize) -> Result<&T> {
        let need = size_of::<T>();
        let block = std::any::type_name::<T>();
        if offset.checked_add(need).is_none_or(|end| end > self.len()) {
            return Err(UioError::BlockTooLarge { mapping: self.what.clone(), block, need, offset, len: self.len() });
        }
        let ptr = self.raw.as_mut_ptr().wrapping_add(offset);
        if !(ptr as usize).is_multiple_of(align_of::<T>()) {
            return Err(UioError::BlockMisaligned {
                mapping: self.what.clone(),
                block,
                offset,
                align: align_of::<T>(),
            });
        }
        // SAFETY: the block's bytes lie inside the mapping, which stays mapped
        // for the returned lifetime (tied to `&self`); the address is aligned
        // for `T`; `T: RegisterBlock` promises every bit pattern is valid and
        // all its memory is UnsafeCell-based, so device-side changes and other
        // volatile accesses through this mapping do not violate `&T`.
        Ok(unsafe { &*ptr.cast::<T>() })
    }

    /// Like [`Mapping::block`], but the result owns the mapping: for a driver
    /// struct that must hold its registers without borrowing (no
    /// self-reference). The mapping's address does not change when the
    /// [`Block`] moves, and it is unmapped when the `Block` is dropped.
    ///
    /// # Errors
    /// As [`Mapping::block`]; the mapping is dropped (unmapped) then.
    pub fn into_block<T: RegisterBlock>(self, offset: usize) -> Result<Block<T>> {
        self.block::<T>(offset)?;
        Ok(Block { map: self, offset, _block: PhantomData })
    }
}

/// A typed register block that owns its [`Mapping`]; derefs to `&T`.
pub struct Block<T> {
    map: Mapping,
    offset: usize,
    /// Behaves like a `&T` (so `!Sync` like the cells in `T`), owns no `T`.
    _block: PhantomData<*const T>,
}

// SAFETY: a `Block` is a `Mapping` (which is `Send`) plus an offset; moving it
// to another thread moves the sole owner of the mapping, and `PhantomData<*const
// T>` only opts out of `Send` by default. `T`'s cells are not shared: `Block` is
// `!Sync`, so no `&T` from it can be used on two threads at once.
unsafe impl<T> Send for Block<T> {}

impl<T: RegisterBlock> std::ops::Deref for Block<T> {
    type Target = T;

    fn deref(&self) -> &T {
        let ptr = self.map.raw.as_mut_ptr().wrapping_add(self.offset);
        // SAFETY: `into_block` checked, through `Mapping::block`, that `T` fits
        // the mapping at `offset` and is aligned there; the mapping is owned by
        // `self`, never remapped, and outlives the returned borrow of `self`;
        // `T: RegisterBlock` makes `&T` over device memory valid.
        unsafe { &*ptr.cast::<T>() }
    }
}

impl<T> Block<T> {
    /// The mapping behind the block (for its description, physical address
    /// and raw bounds-checked access).
    #[must_use]
    pub fn mapping(&self) -> &Mapping {
        &self.map
    }

    /// Byte offset of the block in the mapping.
    #[must_use]
    pub fn offset(&self) -> usize {
        self.offset
    }
}

impl<T> std::fmt::Debug for Block<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("block", &std::any::type_name::<T>())
            .field("mapping", &self.map.what)
            .field("offset", &self.offset)
            .finish()
    }
}
