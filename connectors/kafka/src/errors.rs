//! Which Kafka errors a pipeline waits out and which stop it.
//!
//! librdkafka reconnects, refetches metadata and follows leaders by itself, so most errors
//! it reports are passing: the consumer goes on once the broker is back. A few cannot
//! pass without an operator (credentials, ACLs, librdkafka's own fatal state): a consumer
//! that keeps reporting them would read nothing forever, so the pipeline stops and says
//! why instead.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use sinkd_core::source::SourceError;

/// The error as the pipeline should treat it, with `context` (what was being done) first.
pub fn classify(context: &str, e: &KafkaError) -> SourceError {
    let message = format!("{context}: {e}");
    let fatal = matches!(e, KafkaError::MessageConsumptionFatal(_));
    if fatal || e.rdkafka_error_code().is_some_and(needs_an_operator) {
        SourceError::Fatal(message)
    } else {
        SourceError::Retriable(message)
    }
}

/// Codes no wait can cure: credentials the broker refused, permissions (an ACL added later
/// comes with a restart or a resume anyway), and librdkafka's fatal state. librdkafka's
/// local `Authentication` error is left out: it also reports passing trouble that
/// librdkafka retries itself (an OAUTHBEARER token endpoint that is down).
fn needs_an_operator(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::Fatal
            | C::SaslAuthenticationFailed
            | C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::ClusterAuthorizationFailed
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sinkd_core::error::ErrorClass;

    #[test]
    fn credentials_and_permissions_stop_the_rest_is_waited_out() {
        use KafkaError::{Global, MessageConsumption as Consuming};
        use RDKafkaErrorCode as C;
        let fatal = [
            Consuming(C::TopicAuthorizationFailed),
            Consuming(C::GroupAuthorizationFailed),
            Global(C::SaslAuthenticationFailed),
            KafkaError::MessageConsumptionFatal(C::UnknownMemberId),
        ];
        let passing = [
            Global(C::Authentication),
            Global(C::AllBrokersDown),
            Global(C::BrokerTransportFailure),
            Consuming(C::NotLeaderForPartition),
            Consuming(C::UnknownTopicOrPartition),
            KafkaError::Seek("Local: Timed out".into()),
            KafkaError::MetadataFetch(C::OperationTimedOut),
        ];
        let cases = (fatal.into_iter().map(|e| (e, ErrorClass::Fatal)))
            .chain(passing.into_iter().map(|e| (e, ErrorClass::Retriable)));
        for (e, class) in cases {
            let classified = classify("reading", &e);
            assert_eq!(classified.class(), class, "{e}");
            assert!(
                classified.to_string().starts_with("reading: "),
                "{classified}"
            );
        }
    }
}
