//! Checked block I/O: the client's half of the storage path's end-to-end
//! checksums (`storage_core::integrity`).
//!
//! # Why this module exists
//! A storage block can be damaged anywhere between a client's buffer and
//! the device: in the supervisor's copy of a request or reply, in the
//! driver's memory, on the device. Only a checksum computed where the data
//! is born and checked where it is used catches all of them. Every block
//! client (`drvctl blk`, the NBD front end, the bench and the campaign)
//! builds its requests and reads its replies here, so they all compute the
//! same tags and treat a mismatch the same way: as a definite error naming
//! the driver and the block, never as data.
//!
//! # Designs rejected
//! - Checking in [`crate::Client`] itself: the client library carries opaque
//!   bodies for every driver; only block clients know what a block is.
//! - Leaving each front end to call `storage_core::integrity` directly:
//!   four copies of the same reply matching, and one forgotten check is a
//!   silent corruption.

use storage_core::integrity::{TAG_BYTES, tags_into, verify};
use storage_core::{BLOCK_SIZE, BulkRequest, Mismatch, StorageError, StorageReply, StorageRequest};

/// A checked block request that did not deliver good data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The driver refused the request. [`StorageError::Corrupt`] means it
    /// found a block damaged: on its way to the driver (a write, nothing
    /// written) or on the device (a read, nothing returned).
    #[error("{driver}: {what} of {blocks} block(s) at {lba} refused: {error}")]
    Refused {
        /// The storage driver.
        driver: String,
        /// `read` or `write`.
        what: &'static str,
        /// First block.
        lba: u64,
        /// Blocks.
        blocks: u64,
        /// The driver's reason.
        error: StorageError,
    },
    /// Read data does not match the tags stored with it. For a reply that
    /// carried the data, it was damaged after the driver checked it (the
    /// driver's reply buffer, the supervisor, the socket); for data left in
    /// the pool unchecked (`StorageReply::FilledTagged`), anywhere between
    /// the writer's buffer and this process: on the device too.
    #[error("{driver}: the read at {lba} returned damaged data: {mismatch}")]
    Damaged {
        /// The storage driver.
        driver: String,
        /// First block of the read.
        lba: u64,
        /// The first block that fails.
        mismatch: Mismatch,
    },
    /// The reply is not the answer to this request.
    #[error("{driver}: {what} of {blocks} block(s) at {lba} got an unexpected reply: {reply}")]
    Unexpected {
        /// The storage driver.
        driver: String,
        /// `read` or `write`.
        what: &'static str,
        /// First block.
        lba: u64,
        /// Blocks.
        blocks: u64,
        /// What came back.
        reply: String,
    },
}

impl BlockError {
    /// Whether a checksum caught damaged data (on its way, in a reply, or on
    /// the device), as opposed to another refusal or a protocol error.
    #[must_use]
    pub fn is_corruption(&self) -> bool {
        matches!(self, Self::Damaged { .. } | Self::Refused { error: StorageError::Corrupt { .. }, .. })
    }
}

/// The postcard body of a `WriteChecked` of `data` (whole blocks) at `lba`,
/// with the tag of every block.
#[must_use]
pub fn write_body(lba: u64, data: &[u8]) -> Vec<u8> {
    let mut tags = vec![0u8; data.len() / BLOCK_SIZE * TAG_BYTES];
    tags_into(lba, data, &mut tags);
    postcard::to_allocvec(&StorageRequest::WriteChecked { lba, data, tags: &tags }).unwrap_or_default()
}

/// The postcard body of a `ReadChecked` of `blocks` blocks at `lba`.
#[must_use]
pub fn read_body(lba: u64, blocks: u16) -> Vec<u8> {
    postcard::to_allocvec(&StorageRequest::ReadChecked { lba, blocks }).unwrap_or_default()
}

/// The postcard body of bulk request `req`: with `Some(data)` (the
/// request's blocks for a write, empty for a read) in the client-checked
/// form, `StorageRequest::BulkTagged`, carrying the tag of every block of
/// `data`; with `None` in the driver-checked form, `StorageRequest::Bulk`.
///
/// # Errors
/// The encoder's (not for any request this crate builds).
pub fn bulk_body(req: BulkRequest, data: Option<&[u8]>) -> Result<Vec<u8>, postcard::Error> {
    match data {
        None => postcard::to_allocvec(&StorageRequest::Bulk(req)),
        Some(data) => {
            let mut tags = vec![0u8; data.len() / BLOCK_SIZE * TAG_BYTES];
            tags_into(bulk_lba(&req), data, &mut tags);
            postcard::to_allocvec(&StorageRequest::BulkTagged { req, tags: &tags })
        }
    }
}

fn bulk_lba(req: &BulkRequest) -> u64 {
    match *req {
        BulkRequest::ReadInto { lba, .. } | BulkRequest::WriteFrom { lba, .. } => lba,
    }
}

/// Checks blocks from `lba`, as they landed in this process's memory from
/// the pool, against the `tags` of a `StorageReply::FilledTagged`.
///
/// # Errors
/// [`BlockError::Damaged`], naming the first block that fails.
pub fn check_landed(driver: &str, lba: u64, data: &[u8], tags: &[u8]) -> Result<(), BlockError> {
    verify(lba, data, tags).map_err(|mismatch| BlockError::Damaged { driver: driver.into(), lba, mismatch })
}

fn decode(body: &[u8]) -> Result<StorageReply<'_>, String> {
    match postcard::take_from_bytes::<StorageReply<'_>>(body) {
        Ok((r, [])) => Ok(r),
        Ok((_, rest)) => Err(format!("{} trailing bytes", rest.len())),
        Err(e) => Err(format!("not a storage reply ({e})")),
    }
}

/// Checks the reply to [`write_body`]`(lba, data)` of `blocks` blocks.
///
/// # Errors
/// [`BlockError`]: refused (damaged on its way: [`StorageError::Corrupt`]),
/// or not a `Written` of exactly these blocks.
pub fn check_write(driver: &str, lba: u64, blocks: u64, body: &[u8]) -> Result<(), BlockError> {
    let unexpected =
        |reply: String| BlockError::Unexpected { driver: driver.into(), what: "write", lba, blocks, reply };
    match decode(body).map_err(unexpected)? {
        StorageReply::Written { lba: l, blocks: b } if l == lba && u64::from(b) == blocks => Ok(()),
        StorageReply::Error(error) => {
            Err(BlockError::Refused { driver: driver.into(), what: "write", lba, blocks, error })
        }
        other => Err(unexpected(format!("{other:?}"))),
    }
}

/// Checks the reply to [`read_body`]`(lba, blocks)` and returns its data,
/// each block verified against the tag the device stored with it.
///
/// # Errors
/// [`BlockError`]: refused (a block damaged on the device:
/// [`StorageError::Corrupt`]), damaged after the driver, or not a
/// `DataChecked` of exactly these blocks.
pub fn check_read<'b>(driver: &str, lba: u64, blocks: u64, body: &'b [u8]) -> Result<&'b [u8], BlockError> {
    let unexpected = |reply: String| BlockError::Unexpected { driver: driver.into(), what: "read", lba, blocks, reply };
    match decode(body).map_err(unexpected)? {
        StorageReply::DataChecked { data, tags }
            if data.len() as u64 == blocks * BLOCK_SIZE as u64 && tags.len() as u64 == blocks * TAG_BYTES as u64 =>
        {
            verify(lba, data, tags).map_err(|mismatch| BlockError::Damaged { driver: driver.into(), lba, mismatch })?;
            Ok(data)
        }
        StorageReply::Error(error) => {
            Err(BlockError::Refused { driver: driver.into(), what: "read", lba, blocks, error })
        }
        other => Err(unexpected(format!("{other:?}").chars().take(120).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(lba: u64, blocks: u64, seed: u8) -> Vec<u8> {
        (0..blocks as usize * BLOCK_SIZE).map(|i| (i as u8) ^ seed ^ lba as u8).collect()
    }

    /// The reply a driver gives to a `ReadChecked` of `data` with `tags`.
    fn data_checked(data: &[u8], tags: &[u8]) -> Vec<u8> {
        postcard::to_allocvec(&StorageReply::DataChecked { data, tags }).unwrap()
    }

    #[test]
    fn write_bodies_carry_one_tag_per_block_that_the_core_accepts() {
        let data = block(7, 3, 1);
        let body = write_body(7, &data);
        match storage_core::decode_request(&body).unwrap() {
            StorageRequest::WriteChecked { lba, data: d, tags } => {
                assert_eq!((lba, d, tags.len()), (7, data.as_slice(), 12));
                assert_eq!(verify(7, d, tags), Ok(()));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            storage_core::decode_request(&read_body(9, 2)).unwrap(),
            StorageRequest::ReadChecked { lba: 9, blocks: 2 }
        );
    }

    #[test]
    fn a_read_reply_damaged_after_the_driver_is_an_error_naming_driver_and_block() {
        let data = block(4, 2, 9);
        let mut tags = vec![0u8; 8];
        tags_into(4, &data, &mut tags);
        let good = data_checked(&data, &tags);
        assert_eq!(check_read("storage_driver", 4, 2, &good), Ok(&data[..]));
        let mut bad = data.clone();
        bad[BLOCK_SIZE + 3] ^= 0x40;
        let e = check_read("storage_driver", 4, 2, &data_checked(&bad, &tags)).unwrap_err();
        assert!(e.is_corruption());
        assert!(matches!(e, BlockError::Damaged { lba: 4, mismatch: Mismatch { lba: 5, .. }, .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.starts_with("storage_driver: the read at 4 returned damaged data: block 5"), "{msg}");
    }

    #[test]
    fn refusals_and_wrong_replies_are_definite_errors() {
        let corrupt = StorageError::Corrupt { lba: 3, stored: 1, computed: 2 };
        let body = postcard::to_allocvec(&StorageReply::Error(corrupt)).unwrap();
        let e = check_read("sd", 3, 1, &body).unwrap_err();
        assert!(e.is_corruption() && e.to_string().contains("block 3 does not match its checksum"), "{e}");
        assert!(check_write("sd", 3, 1, &body).unwrap_err().is_corruption());
        let range = StorageError::OutOfRange { lba: 3, blocks: 1, capacity: 2 };
        let e = check_write("sd", 3, 1, &postcard::to_allocvec(&StorageReply::Error(range)).unwrap()).unwrap_err();
        assert!(!e.is_corruption());
        // An unchecked Data reply to a checked read vouches for nothing.
        let plain = postcard::to_allocvec(&StorageReply::Data(&[0u8; BLOCK_SIZE])).unwrap();
        assert!(matches!(check_read("sd", 0, 1, &plain), Err(BlockError::Unexpected { .. })));
        // The wrong blocks written, a short read, garbage.
        let other = postcard::to_allocvec(&StorageReply::Written { lba: 4, blocks: 1 }).unwrap();
        assert!(matches!(check_write("sd", 3, 1, &other), Err(BlockError::Unexpected { .. })));
        let short = data_checked(&[0u8; BLOCK_SIZE], &[0u8; 4]);
        assert!(matches!(check_read("sd", 0, 2, &short), Err(BlockError::Unexpected { .. })));
        assert!(matches!(check_read("sd", 0, 1, &[0xff, 0xff]), Err(BlockError::Unexpected { .. })));
        let ok = postcard::to_allocvec(&StorageReply::Written { lba: 3, blocks: 1 }).unwrap();
        assert_eq!(check_write("sd", 3, 1, &ok), Ok(()));
    }
}
