//! Server reflection answers in both protocol versions (v1 for current
//! grpcurl, v1alpha for older tools and Python's reflection client) and
//! knows the health service as well as the cache service.

mod common;

use common::Memgate;
use tonic::transport::Channel;

macro_rules! reflection_test {
    ($name:ident, $pb:path) => {
        #[tokio::test]
        async fn $name() {
            use $pb as r;
            let mg = Memgate::embedded().await;
            let channel = Channel::from_shared(format!("http://{}", mg.addr))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut client = r::server_reflection_client::ServerReflectionClient::new(channel);
            let ask =
                |req: r::server_reflection_request::MessageRequest| r::ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(req),
                };
            let requests = vec![
                ask(r::server_reflection_request::MessageRequest::ListServices(
                    String::new(),
                )),
                ask(
                    r::server_reflection_request::MessageRequest::FileContainingSymbol(
                        "memgate.v1.Cache".into(),
                    ),
                ),
                ask(
                    r::server_reflection_request::MessageRequest::FileContainingSymbol(
                        "grpc.health.v1.Health".into(),
                    ),
                ),
            ];
            let mut replies = client
                .server_reflection_info(tokio_stream::iter(requests))
                .await
                .unwrap()
                .into_inner();
            use r::server_reflection_response::MessageResponse;
            match replies.message().await.unwrap().unwrap().message_response {
                Some(MessageResponse::ListServicesResponse(list)) => {
                    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
                    assert!(names.contains(&"memgate.v1.Cache".to_string()), "{names:?}");
                    assert!(
                        names.contains(&"grpc.health.v1.Health".to_string()),
                        "{names:?}"
                    );
                }
                other => panic!("list services: {other:?}"),
            }
            for _ in 0..2 {
                match replies.message().await.unwrap().unwrap().message_response {
                    Some(MessageResponse::FileDescriptorResponse(f)) => {
                        assert!(!f.file_descriptor_proto.is_empty())
                    }
                    other => panic!("file containing symbol: {other:?}"),
                }
            }
        }
    };
}

reflection_test!(
    v1_lists_and_describes_cache_and_health,
    tonic_reflection::pb::v1
);
reflection_test!(
    v1alpha_lists_and_describes_cache_and_health,
    tonic_reflection::pb::v1alpha
);
