//! The ring buffer's callback: where each record goes, one way. Data, secrets and Go's header
//! reports become sink calls in the [`Pipeline`]; process events, and the first output error,
//! go to a queue ([`FromRing`]) the capture loop owns and empties after every poll.

use std::cell::RefCell;
use std::io;
use std::sync::mpsc::Sender;

use tlstap_bpf::wire::{self, DecodeError, ProcessEvent, Record};

use crate::pipeline::Pipeline;

/// What the ring callback hands the capture loop.
#[derive(Debug)]
pub enum FromRing {
    /// A process exec'd or exited: for discovery, and to continue it if BPF holds it.
    Process(ProcessEvent),
    /// A sink failed while a record was written. Sent once: the capture is ending.
    OutputFailed(io::Error),
}

/// The state the ring callback keeps between records.
pub struct Intake<'p> {
    /// Borrowed, not owned: the loop writes its own events (attach, detach, ready, stats) into
    /// the same pipeline, in order with the records, and libbpf keeps the callback for as long
    /// as the reader lives. The two never hold the borrow at once: the callback runs only
    /// inside `RingReader::poll`/`consume`, which the loop calls holding no borrow of it (what
    /// must stay true, or `borrow_mut` panics).
    pipeline: &'p RefCell<Pipeline>,
    to_loop: Sender<FromRing>,
    /// A sink failed: records are no longer written, but process events still go to the loop,
    /// which must hear of every process BPF holds to continue it.
    failed: bool,
}

impl<'p> Intake<'p> {
    pub fn new(pipeline: &'p RefCell<Pipeline>, to_loop: Sender<FromRing>) -> Self {
        Intake { pipeline, to_loop, failed: false }
    }

    /// The callback itself: a negative return ends the current poll (an output failed).
    pub fn on_record(&mut self, record: &[u8]) -> i32 {
        self.on_decoded(wire::decode(record))
    }

    fn on_decoded(&mut self, record: Result<Record<'_>, DecodeError>) -> i32 {
        if let Ok(Record::Process(process)) = record {
            if !process.exited && !self.failed {
                self.pipeline.borrow_mut().process_started(process.pid);
            }
            // A send fails only once the loop has ended and dropped its receiver: no poll runs
            // then, and no one is left to tell.
            let _ = self.to_loop.send(FromRing::Process(process));
            return 0;
        }
        if self.failed {
            return 0;
        }
        let mut pipeline = self.pipeline.borrow_mut();
        let written = match record {
            Ok(Record::Data(chunk)) => pipeline.data(chunk),
            Ok(Record::Secret(secret)) => pipeline.secret(&secret),
            Ok(Record::H2Fields(fields)) => pipeline.go_fields(&fields),
            Ok(Record::Process(_)) => Ok(()), // sent to the loop above
            Err(_) => {
                pipeline.decode_error();
                Ok(())
            }
        };
        match written {
            Ok(()) => 0,
            Err(err) => {
                self.failed = true;
                let _ = self.to_loop.send(FromRing::OutputFailed(err));
                -1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use tlstap_bpf::wire::Secret;
    use tlstap_core::event::Event;
    use tlstap_core::sink::Sink;

    use super::*;
    use crate::pipeline::View;

    /// A sink that fails every write, counting them.
    struct Broken(std::rc::Rc<std::cell::Cell<u32>>);

    impl Sink for Broken {
        fn write_event(&mut self, _: &Event<'_>) -> io::Result<()> {
            self.0.set(self.0.get() + 1);
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn secret() -> Record<'static> {
        Record::Secret(Secret {
            ts_ns: 1,
            pid: 7,
            label: b"CLIENT_RANDOM",
            client_random: &[1; 32],
            secret: &[2; 48],
            incomplete: false,
            read_fault: false,
        })
    }

    fn process(pid: u32, held: bool) -> Record<'static> {
        Record::Process(ProcessEvent { exited: false, pid, ts_ns: 1, uid: 0, held, comm: [0; 16] })
    }

    #[test]
    fn records_that_do_not_decode_are_counted_not_fatal() {
        let pipeline = RefCell::new(Pipeline::new(Vec::new(), View::Calls));
        let (tx, rx) = mpsc::channel();
        let mut intake = Intake::new(&pipeline, tx);
        for record in [&b""[..], b"\x01", &[0xff; 64]] {
            assert_eq!(intake.on_record(record), 0, "the ring goes on");
        }
        let pipeline = pipeline.into_inner();
        assert_eq!(pipeline.decode_errors, 3);
        assert_eq!((pipeline.events, pipeline.bytes), (0, 0));
        assert!(rx.try_recv().is_err(), "nothing for the loop");
    }

    /// An output error goes to the loop once and stops the poll; after it nothing more is
    /// written, and processes (held ones above all) still reach the loop, in order.
    #[test]
    fn after_an_output_error_only_processes_reach_the_loop() {
        let writes = std::rc::Rc::new(std::cell::Cell::new(0));
        let sinks: Vec<Box<dyn Sink>> = vec![Box::new(Broken(writes.clone()))];
        let pipeline = RefCell::new(Pipeline::new(sinks, View::Calls));
        let (tx, rx) = mpsc::channel();
        let mut intake = Intake::new(&pipeline, tx);
        assert_eq!(intake.on_decoded(Ok(process(10, false))), 0);
        assert_eq!(intake.on_decoded(Ok(secret())), -1, "the poll stops");
        assert_eq!(intake.on_decoded(Ok(secret())), 0);
        assert_eq!(intake.on_decoded(Ok(process(11, true))), 0);
        assert_eq!(writes.get(), 1, "nothing written after the failure");
        let got: Vec<FromRing> = rx.try_iter().collect();
        assert!(
            matches!(got.as_slice(), [
            FromRing::Process(ProcessEvent { pid: 10, .. }),
            FromRing::OutputFailed(e),
            FromRing::Process(ProcessEvent { pid: 11, held: true, .. }),
        ] if e.kind() == io::ErrorKind::BrokenPipe),
            "{got:?}"
        );
    }
}
