//! `S3Store`: any S3 endpoint (MinIO, AWS, moto) through aws-sdk-s3.
