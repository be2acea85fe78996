//! Cluster-secret authentication messages (`fdfs_proto::auth`): AUTH_CHALLENGE, its reply and
//! AUTH_PROOF as a responder or an initiator receives them from an unauthenticated peer. The
//! first byte picks the decoder. Whatever decodes must survive encode → decode, and a random
//! proof or reply must never be accepted.
#![no_main]

use fdfs_proto::auth::{
    decode_proof, Challenge, ChallengeReply, ClusterSecret, Initiator, Nonce, Purpose, Responder,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let secret = ClusterSecret::new(b"fuzz-cluster-secret".to_vec()).expect("long enough");
    match which % 4 {
        0 => {
            if let Ok(challenge) = Challenge::decode(body) {
                assert_eq!(Challenge::decode(&challenge.encode()).unwrap(), challenge);
            }
        }
        1 => {
            if let Ok(reply) = ChallengeReply::decode(body) {
                assert_eq!(ChallengeReply::decode(&reply.encode()).unwrap(), reply);
            }
            // an initiator never takes a reply it did not get from a holder of the secret
            let initiator = Initiator::new(&secret, Purpose::Sync, Nonce([7; 32]));
            assert!(initiator.on_reply(body).is_err());
        }
        2 => {
            // the responder side: a challenge, then a proof that cannot be right
            let (challenge, proof) = body.split_at(body.len().min(Challenge::LEN));
            if let Ok((responder, reply)) =
                Responder::on_challenge(&secret, Purpose::TrackerLink, challenge, Nonce([9; 32]))
            {
                assert_eq!(reply.len(), ChallengeReply::LEN);
                assert!(responder.on_proof(proof).is_err());
            }
        }
        _ => {
            let _ = decode_proof(body);
        }
    }
});
