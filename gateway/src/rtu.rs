//! Modbus RTU over a serial line (RS-485).
//!
//! A bus is half-duplex: the meters on one serial device are read one request
//! at a time, under one lock per device. A timed-out or broken link is closed
//! and reopened at the next read, so that a late answer can never be taken
//! for the reply to another meter's request.

use crate::config::{Parity, PollConfig, RtuConfig};
use crate::poll::{run_plan, Links, MeterRuntime, ReadError};
use tokio_modbus::slave::{Slave, SlaveContext};
use tokio_serial::SerialPortBuilderExt;

pub(crate) async fn read_rtu(
    links: &Links,
    rtu: &RtuConfig,
    meter: &MeterRuntime,
    poll: &PollConfig,
) -> Result<Vec<Vec<u16>>, ReadError> {
    let bus = links.rtu_bus(&rtu.device.display().to_string());
    let mut guard = bus.lock().await;
    if guard.is_none() {
        let stream = open_port(rtu)?;
        *guard = Some(tokio_modbus::client::rtu::attach_slave(
            stream,
            Slave(meter.unit_id),
        ));
    }
    let ctx = guard.as_mut().expect("opened above");
    ctx.set_slave(Slave(meter.unit_id));
    let result = run_plan(ctx, meter, poll).await;
    if matches!(result, Err(ReadError::Timeout(_) | ReadError::Transport(_))) {
        *guard = None;
    }
    result
}

fn open_port(rtu: &RtuConfig) -> Result<tokio_serial::SerialStream, ReadError> {
    let parity = match rtu.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let stop_bits = if rtu.stop_bits == 2 {
        tokio_serial::StopBits::Two
    } else {
        tokio_serial::StopBits::One
    };
    let data_bits = if rtu.data_bits == 7 {
        tokio_serial::DataBits::Seven
    } else {
        tokio_serial::DataBits::Eight
    };
    tokio_serial::new(rtu.device.to_string_lossy(), rtu.baud)
        .parity(parity)
        .stop_bits(stop_bits)
        .data_bits(data_bits)
        .open_native_async()
        .map_err(|e| ReadError::Transport(format!("open {}: {e}", rtu.device.display())))
}
