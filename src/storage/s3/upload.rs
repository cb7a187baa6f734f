//! The write path: one `PutObject`, or a multipart upload with bounded parts in flight.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinSet;

use super::error::summarize;
use super::{PartPlan, S3Store, MAX_PARTS};
use crate::fault::RetryClass;
use crate::storage::{PutResult, StorageError, Store};

impl S3Store {
    pub(super) async fn put_single(
        &self,
        key: &str,
        body: Bytes,
        if_absent: bool,
    ) -> Result<PutResult, StorageError> {
        let size = body.len() as u64;
        let mut req = self.put_request(key, body);
        if if_absent {
            req = req.if_none_match("*");
        }
        let out = req
            .customize()
            .config_override(self.part_config())
            .send()
            .await
            .map_err(|e| self.err("upload", key, None, e))?;
        Ok(PutResult {
            size,
            etag: out.e_tag().map(str::to_string),
        })
    }

    /// The multipart path: `first` is the first, full part already read.
    pub(super) async fn put_multipart(
        &self,
        key: &str,
        first: Bytes,
        body: &mut (dyn AsyncRead + Send + Unpin),
        plan: PartPlan,
        if_absent: bool,
    ) -> Result<PutResult, StorageError> {
        let full = self.full(key);
        // No checksum algorithm is declared for the whole object: the SDK still
        // sends a CRC32 with every part (`when_supported`), and servers that
        // keep a composite checksum without the `-<parts>` suffix (moto) would
        // otherwise fail the SDK's response validation on every later GET.
        let create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full);
        let created = create
            .send()
            .await
            .map_err(|e| self.err("start upload of", key, None, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        if upload_id.is_empty() {
            return Err(StorageError::Io {
                op: "start upload of",
                store: self.describe(),
                key: key.to_string(),
                class: RetryClass::Permanent,
                source: "the server returned no upload id".into(),
            });
        }
        let mut tasks = JoinSet::new();
        let result = self
            .upload_parts(
                key, &full, &upload_id, first, body, plan, if_absent, &mut tasks,
            )
            .await;
        if result.is_err() {
            // Cancel parts still in flight, then drop the upload; keep the first error.
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            if let Err(abort_err) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&full)
                .upload_id(&upload_id)
                .send()
                .await
            {
                tracing::warn!(
                    uri = %self.describe(),
                    key,
                    error = %summarize(&abort_err),
                    "could not abort the failed multipart upload; `cleanup_incomplete` will remove it"
                );
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_parts(
        &self,
        key: &str,
        full: &str,
        upload_id: &str,
        first: Bytes,
        body: &mut (dyn AsyncRead + Send + Unpin),
        plan: PartPlan,
        if_absent: bool,
        tasks: &mut JoinSet<(i32, Result<CompletedPart, StorageError>)>,
    ) -> Result<PutResult, StorageError> {
        let mut done: Vec<CompletedPart> = Vec::new();
        let mut next = Some(first);
        let mut number: u64 = 0;
        let mut size: u64 = 0;
        while let Some(part) = next.take() {
            number += 1;
            if number > MAX_PARTS {
                return Err(StorageError::Config {
                    store: self.describe(),
                    message: format!(
                        "`{key}` needs more than {MAX_PARTS} parts; raise `max_object_size` (now {} bytes) or `part_size`",
                        self.max_object_size
                    ),
                });
            }
            let full_part = part.len() as u64 == plan.size_of(number);
            size += part.len() as u64;
            // At most `in_flight` parts in flight (fewer as parts grow, within the
            // memory budget), plus this one waiting for a slot or, below, the next
            // one being filled: in_flight + 1 buffers.
            let in_flight = crate::stream::budget::parts_in_flight(
                self.upload_budget,
                plan.size_of(number),
                self.concurrency,
            );
            while tasks.len() >= in_flight {
                let joined = tasks.join_next().await.expect("tasks is not empty");
                done.push(self.joined(key, joined)?);
            }
            self.spawn_part(tasks, key, full, upload_id, number as i32, part);
            if !full_part {
                break; // a short part is the last one
            }
            let want = plan.size_of(number + 1) as usize;
            let read = read_part(body, want);
            tokio::pin!(read);
            let part = loop {
                tokio::select! {
                    biased;
                    Some(joined) = tasks.join_next(), if !tasks.is_empty() => done.push(self.joined(key, joined)?),
                    r = &mut read => break r,
                }
            };
            let part = part.map_err(|source| StorageError::Body {
                store: self.describe(),
                key: key.to_string(),
                source,
            })?;
            if !part.is_empty() {
                next = Some(part);
            }
        }
        while let Some(joined) = tasks.join_next().await {
            done.push(self.joined(key, joined)?);
        }
        done.sort_by_key(|p| p.part_number());
        let mut complete = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            );
        if if_absent {
            complete = complete.if_none_match("*");
        }
        let out = complete
            .send()
            .await
            .map_err(|e| self.err("complete upload of", key, None, e))?;
        Ok(PutResult {
            size,
            etag: out.e_tag().map(str::to_string),
        })
    }

    fn spawn_part(
        &self,
        tasks: &mut JoinSet<(i32, Result<CompletedPart, StorageError>)>,
        key: &str,
        full: &str,
        upload_id: &str,
        number: i32,
        data: Bytes,
    ) {
        let this = self.clone();
        let (key, full, upload_id) = (key.to_string(), full.to_string(), upload_id.to_string());
        tasks.spawn(async move {
            let res = this
                .client
                .upload_part()
                .bucket(&this.bucket)
                .key(&full)
                .upload_id(&upload_id)
                .part_number(number)
                .body(ByteStream::from(data))
                .customize()
                .config_override(this.part_config())
                .send()
                .await;
            let res = match res {
                Ok(out) => Ok(CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build()),
                Err(e) => Err(this.err(
                    "upload",
                    &key,
                    Some(format!("part {number} of the multipart upload")),
                    e,
                )),
            };
            (number, res)
        });
    }

    fn joined(
        &self,
        key: &str,
        joined: Result<(i32, Result<CompletedPart, StorageError>), tokio::task::JoinError>,
    ) -> Result<CompletedPart, StorageError> {
        match joined {
            Ok((_, res)) => res,
            Err(e) => Err(StorageError::Io {
                op: "upload",
                store: self.describe(),
                key: key.to_string(),
                class: RetryClass::Temporary,
                source: Box::new(e),
            }),
        }
    }
}

/// Reads up to `want` bytes (fewer only at the end of the stream).
pub(super) async fn read_part(
    body: &mut (dyn AsyncRead + Send + Unpin),
    want: usize,
) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(want);
    while buf.len() < want {
        let mut limited = (&mut *body).take((want - buf.len()) as u64);
        if limited.read_buf(&mut buf).await? == 0 {
            break;
        }
    }
    Ok(buf.freeze())
}
