// The flags rclone transfers share beyond their defaults, each with the measurement or the failure that chose it.

/**
 * Files are written without reserving their size first. Our destinations are cache file systems:
 * a tmpfs with huge pages, where a reservation makes the writes cost the kernel four times as much
 * (2 GiB: 2.7-3.9 s of system time against 0.5-0.7 s; a 2 GiB fill from the cluster tier took
 * 9.9-12.3 s instead of 7.7), or an ext4 image whose blocks are all reserved when it is made.
 */
export const NO_PREALLOCATION = ['--local-no-preallocate'];

/** One attempt of the whole command (rclone's default is three). */
export const ONE_ATTEMPT = ['--retries', '1'];

/** A few seconds to connect, one attempt: for a remote that has a slower one behind it. */
export const IMPATIENT = [
  '--contimeout',
  '5s',
  '--timeout',
  '20s',
  ...ONE_ATTEMPT,
  '--low-level-retries',
  '2',
];

/**
 * Named files fetched by name, not found by listing their directories again; no HEAD for a size
 * the caller knows, and no checksum after the copy: a file of unknown size is read into rclone's
 * memory and written out, and rclone then hashed both (an HTTP server gives no hash to compare
 * with: a check of rclone against itself, a quarter of its CPU for 50,000 small files; the caller
 * checks each file's size against its listing). Only for HTTP: other remotes answer a name with
 * a request of its own, which costs more than a listing holding many names (S3 without that
 * request is measured in docs/benchmarks.md: no faster on s3rver).
 */
export const LISTED_HTTP = ['--no-traverse', '--http-no-head', '--ignore-checksum'];
