//! A response body that shows each frame to the request's trace on its way to the client,
//! so the span learns the model that answered and the usage, and when the reply ends.

use super::RequestTrace;
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Wraps the client's response body; holds the trace until the body is done with.
pub(crate) struct ObservedBody<B> {
    inner: B,
    trace: Arc<RequestTrace>,
}

impl<B> ObservedBody<B> {
    pub(crate) fn new(inner: B, trace: Arc<RequestTrace>) -> Self {
        ObservedBody { inner, trace }
    }
}

impl<B> Body for ObservedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.trace.reply_chunk(data);
                }
            }
            Poll::Ready(Some(Err(_))) => self.trace.reply_aborted(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
