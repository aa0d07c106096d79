//! The thin async shell: one tokio-modbus TCP server per port, answering from
//! the fleet's meters. All register logic lives in the firmware core and in
//! [`super::SimMeterState::registers_at`]; this module only maps requests and
//! faults to Modbus answers.

use super::{Fault, Fleet, SimError};
use crate::registers::{self, ReadError};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_modbus::server::tcp::Server;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_util::sync::CancellationToken;

/// Serves every listener until `shutdown`.
pub(super) async fn serve(
    fleet: Arc<Fleet>,
    listeners: Vec<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), SimError> {
    let mut tasks = tokio::task::JoinSet::new();
    for (port, listener) in listeners.into_iter().enumerate() {
        let fleet = fleet.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let addr = fleet.ports[port].addr;
            let slots = Arc::new(Semaphore::new(super::MAX_CONNECTIONS_PER_PORT));
            let on_connected = |stream, peer: SocketAddr| {
                let fleet = fleet.clone();
                let slots = slots.clone();
                async move {
                    let Ok(permit) = slots.try_acquire_owned() else {
                        tracing::warn!(%addr, %peer, "connection limit reached; closing");
                        return Ok(None);
                    };
                    let _ = stream_nodelay(&stream);
                    Ok(Some((
                        PortService {
                            fleet,
                            port,
                            _permit: permit,
                        },
                        stream,
                    )))
                }
            };
            let on_error = move |err: std::io::Error| {
                tracing::debug!(%addr, error = %err, "Modbus connection ended with an error");
            };
            Server::new(listener)
                .serve_until(&on_connected, on_error, shutdown.cancelled_owned())
                .await
                .map(|_| ())
                .map_err(|source| SimError::Serve { addr, source })
        });
    }
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "simulator port failed");
                if result.is_ok() {
                    result = Err(e);
                }
                // One failed port stops the fleet: a half-served fleet would
                // look like dead meters.
                shutdown.cancel();
            }
            Err(e) => {
                tracing::error!(error = %e, "simulator port task panicked");
                shutdown.cancel();
            }
        }
    }
    tracing::info!("meter simulator stopped");
    result
}

fn stream_nodelay(stream: &tokio::net::TcpStream) -> std::io::Result<()> {
    // Requests and answers are single small frames: send them at once.
    stream.set_nodelay(true)
}

/// One connection's view of its port.
struct PortService {
    fleet: Arc<Fleet>,
    port: usize,
    _permit: OwnedSemaphorePermit,
}

/// What a request gets: an answer now, or after a delay (slow meter).
type Answer = Result<Option<Response>, ExceptionCode>;

impl tokio_modbus::server::Service for PortService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = BoxFuture<'static, Answer>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let (answer, delay_ms) = self.answer(req);
        // A device exception is not a transport failure: counted apart.
        let outcome = match &answer {
            Ok(Some(_)) => "answered",
            Ok(None) => "unanswered",
            Err(_) => "exception",
        };
        metrics::counter!("waterworks_sim_modbus_requests_total", "outcome" => outcome)
            .increment(1);
        match delay_ms {
            Some(ms) => async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                answer
            }
            .boxed(),
            None => futures::future::ready(answer).boxed(),
        }
    }
}

impl PortService {
    fn answer(&self, req: SlaveRequest<'static>) -> (Answer, Option<u64>) {
        let Some(meter) = self.fleet.meter(self.port, req.slave) else {
            return (Err(ExceptionCode::GatewayTargetDevice), None);
        };
        let delay = match meter.fault {
            // No answer at all: the client times out.
            Fault::Dead => return (Ok(None), None),
            Fault::Exceptions => return (Err(ExceptionCode::ServerDeviceFailure), None),
            Fault::Slow { delay_ms } => Some(delay_ms),
            _ => None,
        };
        let read = |address, quantity| -> Result<Vec<u16>, ExceptionCode> {
            let image = meter.registers_at(self.fleet.clock.now());
            registers::read(&image, address, quantity)
                .map(<[u16]>::to_vec)
                .map_err(|e| match e {
                    ReadError::IllegalQuantity => ExceptionCode::IllegalDataValue,
                    ReadError::IllegalAddress => ExceptionCode::IllegalDataAddress,
                })
        };
        let answer = match req.request {
            Request::ReadInputRegisters(a, q) => {
                read(a, q).map(|w| Some(Response::ReadInputRegisters(w)))
            }
            Request::ReadHoldingRegisters(a, q) => {
                read(a, q).map(|w| Some(Response::ReadHoldingRegisters(w)))
            }
            // Writes (and everything else) are refused: no gateway may ever
            // reset a billing register.
            _ => Err(ExceptionCode::IllegalFunction),
        };
        (answer, delay)
    }
}
