//! The do-nothing gRPC server: memgate's generated `Cache` service answered
//! from an in-memory map, with no memcached behind it.
//!
//! It is the floor a tonic server puts under memgate: what HTTP/2, protobuf
//! and the runtime cost per call before any cache work. So it uses tonic's
//! defaults and nothing else — `Server::builder()` on tokio's default
//! multi-thread runtime, `tcp_nodelay` on accepted sockets (without it
//! small replies wait on Nagle) — and stores values naively (a map behind a
//! lock, values shared by reference count). It runs as its own process (`memgate-bench
//! null-server`), so its CPU can be read from `/proc` like any server's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::RwLock;

use memgate_api::v1 as pb;
use pb::cache_server::{Cache, CacheServer};
use tonic::{Request, Response, Status, Streaming};

/// Serves on `listen` until the process is killed.
pub(crate) async fn serve(listen: SocketAddr) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(CacheServer::new(MapCache::default()))
        .serve(listen)
        .await
}

/// The whole store: one map behind one lock.
#[derive(Default)]
struct MapCache {
    items: RwLock<HashMap<String, bytes::Bytes>>,
}

#[tonic::async_trait]
impl Cache for MapCache {
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let key = req.into_inner().key;
        let value = self.items.read().unwrap().get(&key).cloned();
        Ok(Response::new(pb::GetResponse {
            found: value.is_some(),
            value: value.unwrap_or_default(),
            ..Default::default()
        }))
    }

    async fn set(&self, req: Request<pb::SetRequest>) -> Result<Response<pb::SetResponse>, Status> {
        let item = req.into_inner();
        self.items.write().unwrap().insert(item.key, item.value);
        Ok(Response::new(pb::SetResponse {
            stored: true,
            cas: 0,
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let key = req.into_inner().key;
        let deleted = self.items.write().unwrap().remove(&key).is_some();
        Ok(Response::new(pb::DeleteResponse { deleted }))
    }

    async fn list(
        &self,
        _: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        Err(Status::unimplemented("the null server does not list"))
    }

    async fn batch_get(
        &self,
        req: Request<pb::BatchGetRequest>,
    ) -> Result<Response<pb::BatchGetResponse>, Status> {
        let keys = req.into_inner().keys;
        let items = self.items.read().unwrap();
        let results = keys
            .into_iter()
            .map(|key| {
                let value = items.get(&key).cloned();
                pb::GetResult {
                    key,
                    found: value.is_some(),
                    value: value.unwrap_or_default(),
                    ..Default::default()
                }
            })
            .collect();
        Ok(Response::new(pb::BatchGetResponse { results }))
    }

    async fn batch_set(
        &self,
        req: Request<pb::BatchSetRequest>,
    ) -> Result<Response<pb::BatchSetResponse>, Status> {
        let batch = req.into_inner().items;
        let stored = batch.len() as u32;
        let mut items = self.items.write().unwrap();
        for item in batch {
            items.insert(item.key, item.value);
        }
        Ok(Response::new(pb::BatchSetResponse {
            stored,
            errors: Vec::new(),
        }))
    }

    async fn batch_delete(
        &self,
        _: Request<pb::BatchDeleteRequest>,
    ) -> Result<Response<pb::BatchDeleteResponse>, Status> {
        Err(Status::unimplemented(
            "the null server does not batch-delete",
        ))
    }

    type BatchGetStreamStream = futures::stream::Empty<Result<pb::GetResult, Status>>;

    async fn batch_get_stream(
        &self,
        _: Request<Streaming<pb::GetRequest>>,
    ) -> Result<Response<Self::BatchGetStreamStream>, Status> {
        Err(Status::unimplemented("the null server does not stream"))
    }

    async fn batch_set_stream(
        &self,
        _: Request<Streaming<pb::SetRequest>>,
    ) -> Result<Response<pb::BatchSetResponse>, Status> {
        Err(Status::unimplemented("the null server does not stream"))
    }

    async fn batch_delete_stream(
        &self,
        _: Request<Streaming<pb::DeleteRequest>>,
    ) -> Result<Response<pb::BatchDeleteResponse>, Status> {
        Err(Status::unimplemented("the null server does not stream"))
    }

    async fn stats(
        &self,
        _: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        Err(Status::unimplemented("the null server keeps no stats"))
    }

    async fn locate(
        &self,
        _: Request<pb::LocateRequest>,
    ) -> Result<Response<pb::LocateResponse>, Status> {
        Err(Status::unimplemented("the null server has no shards"))
    }

    async fn increment(
        &self,
        _: Request<pb::IncrementRequest>,
    ) -> Result<Response<pb::IncrementResponse>, Status> {
        Err(Status::unimplemented("the null server has no counters"))
    }

    async fn touch(
        &self,
        _: Request<pb::TouchRequest>,
    ) -> Result<Response<pb::TouchResponse>, Status> {
        Err(Status::unimplemented("the null server has no TTLs"))
    }
}
