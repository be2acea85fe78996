//! One request: normalize the path, find the rule, act.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fdfs_client::migrate::Entry;
use fdfs_client::{Client, ClientError, FileId};
use futures_util::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio_util::io::ReaderStream;
use tracing::{debug, warn};

use crate::config::{MapMode, RouterConfig};
use crate::mapview::MapView;
use crate::path::{normalize, PathError};
use crate::rules::{Match, RuleAction, Rules};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;
pub type ProxyClient = hyper_util::client::legacy::Client<HttpConnector, Empty<Bytes>>;

/// Everything a request needs.
pub struct State {
    pub config: RouterConfig,
    pub rules: Rules,
    pub map: Option<Arc<MapView>>,
    pub client: Option<Client>,
    pub proxy: ProxyClient,
}

/// Pieces of a download are passed on in chunks of this size.
const PIPE_BYTES: usize = 64 * 1024;

pub async fn handle(state: Arc<State>, request: Request<Incoming>) -> Response<Body> {
    let method = request.method().clone();
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let raw_path = request.uri().path().to_string();
    if raw_path == "/healthz" {
        return text(StatusCode::OK, "ok\n");
    }
    let path = match normalize(&raw_path, state.config.max_path) {
        Ok(path) => path,
        Err(PathError::TooLong) => return text(StatusCode::URI_TOO_LONG, "path too long\n"),
        Err(err) => {
            debug!(path = %raw_path, error = %err, "bad request path");
            return text(StatusCode::BAD_REQUEST, &format!("bad request: {err}\n"));
        }
    };
    let query = request.uri().query().map(str::to_string);
    let Some(matched) = state.rules.find(&path) else {
        return not_found();
    };
    let head = method == Method::HEAD;
    match &matched.rule.action {
        RuleAction::Deny => text(StatusCode::FORBIDDEN, "forbidden\n"),
        RuleAction::Redirect { to, status } => {
            let location = to.render(&matched.values(query.as_deref(), None), true);
            redirect(*status, &location)
        }
        RuleAction::Proxy { to } => {
            let url = to.render(&matched.values(query.as_deref(), None), true);
            proxy(&state, &url, request.headers(), head).await
        }
        RuleAction::Map { .. } => {
            map(&state, &matched, query.as_deref(), request.headers(), head).await
        }
    }
}

async fn map(
    state: &State,
    matched: &Match<'_, '_>,
    query: Option<&str>,
    headers: &HeaderMap,
    head: bool,
) -> Response<Body> {
    let RuleAction::Map {
        mode,
        key,
        to,
        status,
        sign,
    } = &matched.rule.action
    else {
        return not_found();
    };
    let Some(view) = &state.map else {
        return not_found();
    };
    let key = key.render(&matched.values(query, None), false);
    let Some(entry) = view.lookup(&key, matched.rule.case_insensitive).await else {
        debug!(%key, "not in the migration map");
        return not_found();
    };
    let id = match FileId::parse(&entry.file_id) {
        Ok(id) => id,
        Err(err) => {
            warn!(%key, file_id = %entry.file_id, error = %err, "bad file id in the migration map");
            return text(StatusCode::BAD_GATEWAY, "bad map entry\n");
        }
    };
    match mode {
        MapMode::Redirect => {
            let mut location = match to {
                Some(to) => to.render(&matched.values(query, Some(&entry.file_id)), true),
                None => format!(
                    "{}/{}",
                    state.config.storage_url.trim_end_matches('/'),
                    entry.file_id
                ),
            };
            if *sign {
                let ts = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(1);
                let token =
                    fdfs_client::sign_token(&id.name.to_string(), &state.config.secret_key, ts);
                let sep = if location.contains('?') { '&' } else { '?' };
                location.push_str(&format!("{sep}token={token}&ts={ts}"));
            }
            redirect(*status, &location)
        }
        MapMode::Serve => match &state.client {
            Some(client) => serve(state, client, &key, &id, &entry, headers, head).await,
            None => text(StatusCode::INTERNAL_SERVER_ERROR, "no client configured\n"),
        },
    }
}

/// Streams the file from the cluster. The answer's status waits for the first bytes (or the
/// download's failure), so a file missing from the cluster is a 404 and not a cut-off 200.
async fn serve(
    state: &State,
    client: &Client,
    key: &str,
    id: &FileId,
    entry: &Entry,
    headers: &HeaderMap,
    head: bool,
) -> Response<Body> {
    let etag = format!("\"{:08x}-{}\"", entry.crc32, entry.size);
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, content_type(key))
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "none")
        .header("x-fdfs-file-id", id.to_string());
    if !state.config.cache_control.is_empty() {
        builder = builder.header(header::CACHE_CONTROL, &state.config.cache_control);
    }
    if let Some(tags) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        if tags
            .split(',')
            .any(|tag| tag.trim() == etag || tag.trim() == "*")
        {
            return finish(builder.status(StatusCode::NOT_MODIFIED), empty());
        }
    }
    builder = builder.header(header::CONTENT_LENGTH, entry.size);
    if head {
        return finish(builder.status(StatusCode::OK), empty());
    }
    let (mut writer, reader) = tokio::io::duplex(PIPE_BYTES);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let download_client = client.clone();
    let download_id = id.clone();
    tokio::spawn(async move {
        let result = download_client
            .download_to_writer(&download_id, 0, 0, &mut writer)
            .await;
        drop(writer);
        let _ = done_tx.send(result);
    });
    let mut stream = ReaderStream::with_capacity(reader, PIPE_BYTES);
    let first = match stream.next().await {
        Some(Ok(chunk)) => chunk,
        Some(Err(err)) => return download_failed(id, &ClientError::Io(err)),
        // nothing came: an empty file, or a failure before the first byte
        None => {
            return match done_rx.await {
                Ok(Ok(_)) => finish(builder.status(StatusCode::OK), empty()),
                Ok(Err(err)) => download_failed(id, &err),
                Err(_) => text(StatusCode::BAD_GATEWAY, "download failed\n"),
            }
        }
    };
    // after the data, the download's own result: a failure mid-way aborts the response
    let outcome = futures_util::stream::once(async move {
        match done_rx.await {
            Ok(Ok(_)) => None,
            Ok(Err(err)) => Some(Err::<Frame<Bytes>, BoxError>(Box::new(err))),
            Err(_) => Some(Err("download task ended".into())),
        }
    })
    .filter_map(|item| async move { item });
    let frames = futures_util::stream::once(async move { Ok::<_, BoxError>(Frame::data(first)) })
        .chain(stream.map(|chunk| chunk.map(Frame::data).map_err(BoxError::from)))
        .chain(outcome);
    finish(
        builder.status(StatusCode::OK),
        BodyExt::boxed(StreamBody::new(frames)),
    )
}

fn download_failed(id: &FileId, err: &ClientError) -> Response<Body> {
    if matches!(err, ClientError::NotFound) {
        warn!(%id, "mapped file is missing from the cluster");
        return not_found();
    }
    warn!(%id, error = %err, "download from the cluster failed");
    text(
        StatusCode::BAD_GATEWAY,
        "cannot fetch the file from the cluster\n",
    )
}

/// Headers a proxy passes on to the old server (conditional and range requests included).
const FORWARDED: [header::HeaderName; 8] = [
    header::ACCEPT,
    header::ACCEPT_ENCODING,
    header::ACCEPT_LANGUAGE,
    header::IF_MODIFIED_SINCE,
    header::IF_NONE_MATCH,
    header::IF_RANGE,
    header::RANGE,
    header::USER_AGENT,
];

/// Hop-by-hop headers, not passed back.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

async fn proxy(state: &State, url: &str, headers: &HeaderMap, head: bool) -> Response<Body> {
    let mut builder = Request::builder()
        .method(if head { Method::HEAD } else { Method::GET })
        .uri(url);
    for name in FORWARDED {
        for value in headers.get_all(&name) {
            builder = builder.header(&name, value);
        }
    }
    let request = match builder.body(Empty::new()) {
        Ok(request) => request,
        Err(err) => {
            warn!(%url, error = %err, "proxy target is not a valid URL");
            return text(StatusCode::BAD_GATEWAY, "bad proxy target\n");
        }
    };
    let answer =
        tokio::time::timeout(state.config.proxy_timeout, state.proxy.request(request)).await;
    let upstream = match answer {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(err)) => {
            warn!(%url, error = %err, "proxy request failed");
            return text(StatusCode::BAD_GATEWAY, "upstream failed\n");
        }
        Err(_) => {
            warn!(%url, "proxy request timed out");
            return text(StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n");
        }
    };
    let (parts, body) = upstream.into_parts();
    let mut response = Response::new(body.map_err(BoxError::from).boxed());
    *response.status_mut() = parts.status;
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}

fn redirect(status: u16, location: &str) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND);
    match HeaderValue::from_str(location) {
        Ok(value) => {
            let mut response = text(status, &format!("see {location}\n"));
            response.headers_mut().insert(header::LOCATION, value);
            response
        }
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "bad redirect target\n"),
    }
}

fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "not found\n")
}

fn empty() -> Body {
    Empty::new().map_err(BoxError::from).boxed()
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(BoxError::from)
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn finish(builder: hyper::http::response::Builder, body: Body) -> Response<Body> {
    builder
        .body(body)
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "bad response\n"))
}

/// Content type from the old path's extension (the common web types; else binary).
pub fn content_type(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ext = match name.rsplit_once('.') {
        Some((_, ext)) => ext.to_ascii_lowercase(),
        None => return "application/octet-stream",
    };
    match ext.as_str() {
        "jpg" | "jpeg" | "jpe" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "bmp" => "image/bmp",
        "tif" | "tiff" => "image/tiff",
        "txt" => "text/plain; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css",
        "js" => "text/javascript",
        "json" => "application/json",
        "xml" => "application/xml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(content_type("/upload/a.JPG"), "image/jpeg");
        assert_eq!(content_type("/a.b/c"), "application/octet-stream");
        assert_eq!(content_type("/x/photo.webp"), "image/webp");
        assert_eq!(content_type("/x/.hidden"), "application/octet-stream");
    }

    #[test]
    fn redirects_need_a_header_safe_location() {
        let ok = redirect(301, "https://cdn/x%20y");
        assert_eq!(ok.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(ok.headers()[header::LOCATION], "https://cdn/x%20y");
        let bad = redirect(302, "https://cdn/\n");
        assert_eq!(bad.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
