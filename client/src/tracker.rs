//! Tracker queries used by clients (D.1, D.2), one exchange each on a given connection.

use fdfs_proto::cmd::Command;
use fdfs_proto::storage_msg::GroupAndName;
use fdfs_proto::tracker_msg::{
    encode_group, FetchReply, QueryStoreAllReply, QueryStoreReply, StorageAddr,
};
use fdfs_proto::{GROUP_NAME_LEN, IP_WIDTH_LONG};

use crate::conn::Conn;
use crate::error::ClientError;
use crate::FileId;

/// Servers per group (A.5); bounds the ALL-form and FETCH replies.
const MAX_SERVERS_PER_GROUP: u64 = 32;
/// Largest address entry: IP char[45] + port int64 (B.1 with W = 46).
const MAX_ADDR_LEN: u64 = (IP_WIDTH_LONG - 1 + 8) as u64;
/// ONE-form store reply: 40 bytes (W = 16) or 70 bytes (W = 46).
const MAX_STORE_REPLY: u64 = GROUP_NAME_LEN as u64 + MAX_ADDR_LEN + 1;
const MAX_STORE_ALL_REPLY: u64 = GROUP_NAME_LEN as u64 + MAX_SERVERS_PER_GROUP * MAX_ADDR_LEN + 1;
const MAX_FETCH_REPLY: u64 = GROUP_NAME_LEN as u64 + MAX_SERVERS_PER_GROUP * MAX_ADDR_LEN;

/// Where to upload: 101, or 104 with a group.
pub(crate) async fn query_store(
    conn: &mut Conn,
    group: Option<&str>,
) -> Result<QueryStoreReply, ClientError> {
    let body = conn
        .call(
            store_cmd(
                group,
                Command::QueryStoreWithoutGroupOne,
                Command::QueryStoreWithGroupOne,
            ),
            &group.map(encode_group).unwrap_or_default(),
            MAX_STORE_REPLY,
        )
        .await?;
    QueryStoreReply::decode(&body).map_err(ClientError::Protocol)
}

/// Every storage that takes uploads: 106, or 107 with a group.
pub(crate) async fn query_store_all(
    conn: &mut Conn,
    group: Option<&str>,
) -> Result<QueryStoreAllReply, ClientError> {
    let body = conn
        .call(
            store_cmd(
                group,
                Command::QueryStoreWithoutGroupAll,
                Command::QueryStoreWithGroupAll,
            ),
            &group.map(encode_group).unwrap_or_default(),
            MAX_STORE_ALL_REPLY,
        )
        .await?;
    QueryStoreAllReply::decode(&body).map_err(ClientError::Protocol)
}

/// The storage to read `id` from (102).
pub(crate) async fn query_fetch(conn: &mut Conn, id: &FileId) -> Result<StorageAddr, ClientError> {
    query_one_server(conn, Command::QueryFetchOne, id).await
}

/// The storage to send updates of `id` to (103): delete, metadata, appender operations, slaves.
pub(crate) async fn query_update(conn: &mut Conn, id: &FileId) -> Result<StorageAddr, ClientError> {
    query_one_server(conn, Command::QueryUpdate, id).await
}

async fn query_one_server(
    conn: &mut Conn,
    cmd: Command,
    id: &FileId,
) -> Result<StorageAddr, ClientError> {
    let request = GroupAndName {
        group: id.group.clone(),
        name: id.name.to_string(),
    };
    let body = conn
        .call(cmd.code(), &request.encode(), MAX_FETCH_REPLY)
        .await?;
    let reply = FetchReply::decode(&body).map_err(ClientError::Protocol)?;
    reply
        .servers
        .into_iter()
        .next()
        .ok_or(ClientError::Protocol(fdfs_proto::ProtoError::BadLength {
            what: "fetch reply without servers",
            len: body.len() as u64,
        }))
}

fn store_cmd(group: Option<&str>, without: Command, with: Command) -> u8 {
    match group {
        Some(_) => with.code(),
        None => without.code(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_bounds_admit_full_groups() {
        assert_eq!(MAX_STORE_REPLY, 70);
        let servers: Vec<StorageAddr> = (0..MAX_SERVERS_PER_GROUP)
            .map(|i| StorageAddr {
                ip: format!("10.0.0.{i}"),
                port: 23000,
            })
            .collect();
        let all = QueryStoreAllReply {
            group: "group1".into(),
            servers: servers.clone(),
            store_path_index: 0,
        };
        assert!(all.encode().len() as u64 <= MAX_STORE_ALL_REPLY);
        let fetch = FetchReply {
            group: "group1".into(),
            servers,
        };
        assert!(fetch.encode().len() as u64 <= MAX_FETCH_REPLY);
    }
}
