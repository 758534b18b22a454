//! The wiring every service shares, so that a service's `run()` says only what is its
//! own: its store, its API, which collections carry outboxes, what it consumes.
//!
//! [`Wiring::new`] opens the database (no I/O yet) and the gate; the service then asks
//! for a relay ([`Wiring::relay`], which also publishes what the deleted accounts it
//! remembers have to say), consumers ([`Wiring::consume`]), the follower of ended
//! sessions, tasks of its own; [`Wiring::serve`] serves its API behind the gate, with
//! the request-size limit, health, reflection, and the background tasks stopped after
//! the RPCs at shutdown (`social_kit::serve::serve`).
//!
//! It lives here, beside the relay and the consumer, because it ties them to
//! `social_kit`'s server; nothing in it is specific to one service.

use std::{future::Future, process::ExitCode};

use futures::future::BoxFuture;

use social_kit::{
    client::Peer,
    config::CommonConfig,
    config::ServiceConfig,
    mongo::{Db, slots::Slots},
    peers::Known,
    serve::{Background, Command, Gate, Routable, Rpcs, ServeSpec, Startup},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    EventsConfig,
    consumer::Handler,
    outbox::{Relay, RelayWaker},
    removed_users::RemovedUsers,
    topology::QueueSpec,
};

/// What a service's `lib.rs` names to be put together.
pub mod prelude {
    pub use social_kit::{
        client::Peer,
        config::{CommonConfig, ConfigError},
    };
    pub use tokio::net::TcpListener;
    pub use tokio_util::sync::CancellationToken;

    pub use super::Wiring;
    pub use crate::EventsConfig;
}

/// A service being put together (see the module docs).
pub struct Wiring {
    common: CommonConfig,
    events: EventsConfig,
    db: Db,
    gate: Gate,
    rpcs: Rpcs,
    relay: Option<Relay>,
    background: Background,
}

impl Wiring {
    /// The database and gate of the service configured by `common`, its events on
    /// `events`.
    pub async fn new(common: &CommonConfig, events: &EventsConfig) -> anyhow::Result<Self> {
        // Its consumers may start before it holds a sort-key slot: nothing they mint is
        // stored until it does (see `Wiring::serve`).
        social_kit::paging::expect_slot();
        Ok(Self {
            db: social_kit::mongo::connect(common).await?,
            gate: Gate::from_config(common)?,
            common: common.clone(),
            events: events.clone(),
            rpcs: Rpcs::default(),
            relay: None,
            background: Background::new(),
        })
    }

    /// The service's database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The gate its RPCs are served behind.
    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// A name unique to this replica (`post-<id>`), for its exclusive queues.
    pub fn replica(&self) -> String {
        format!("{}-{}", self.common.service, bson::oid::ObjectId::new().to_hex())
    }

    /// The methods of its API that only services may call (see [`Rpcs`]).
    pub fn internal(&mut self, methods: &'static [&'static str]) {
        self.rpcs.internal = methods;
    }

    /// The methods of its API that establish who the caller is (see [`Rpcs`]).
    pub fn authenticating(&mut self, methods: &'static [&'static str]) {
        self.rpcs.authenticating = methods;
    }

    /// The relay that publishes the outboxes of `collections` and of the tombstones of
    /// the deleted accounts this service remembers ([`RemovedUsers`]: the event that says
    /// the service cleared one); wake it after each write that appends to an outbox.
    pub fn relay(&mut self, collections: &[&str]) -> RelayWaker {
        let tombstones = RemovedUsers::collection(self.common.service);
        let mut all = collections.to_vec();
        all.push(&tombstones);
        self.relay_of(&all)
    }

    /// The relay of `collections` alone: for the service that owns accounts, which keeps
    /// no tombstones of them.
    pub fn relay_of(&mut self, collections: &[&str]) -> RelayWaker {
        let relay = Relay::new(self.events.clone(), self.common.service, &self.db, collections);
        let waker = relay.waker();
        self.relay = Some(relay);
        waker
    }

    /// Consumes `queue` with `handler` (see [`crate::consumer::run`]).
    pub fn consume(&mut self, queue: QueueSpec, handler: Handler) {
        let events = self.events.clone();
        self.background.spawn(|stop| crate::consumer::run(events, queue, handler, stop));
    }

    /// Refuses the tokens of sessions that ended, as the user service at `users` and its
    /// broadcasts tell them (see [`crate::sessions`]).
    pub fn refuse_ended_sessions(&mut self, users: Peer) {
        crate::sessions::refuse_ended_sessions(
            &mut self.background,
            &self.events,
            self.common.service,
            &self.gate,
            users,
        );
    }

    /// Runs `task` beside the server until shutdown (it gets the token that tells it to
    /// stop).
    pub fn spawn<F>(&mut self, task: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.background.spawn(task);
    }

    /// Serves `server` behind the gate on `listener` until `shutdown`, once `startup`
    /// (ping, indexes) has succeeded; the relay and the other tasks run beside it and
    /// stop after it.
    pub async fn serve(
        mut self,
        server: impl Routable,
        startup: impl Startup,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        if let Some(relay) = self.relay.take() {
            self.background.spawn(|stop| relay.run(stop));
        }
        // The slot its sort keys are minted under (`social_kit::mongo::slots`): held
        // before anything is served, renewed beside it.
        let slots = Slots::new(&self.db);
        self.background.spawn({
            let slots = slots.clone();
            |stop| slots.run(stop)
        });
        let startup = Leased { slots, then: startup };
        let spec = ServeSpec {
            config: &self.common,
            grpc_name: server.grpc_name(),
            db: self.db,
            gate: self.gate,
            rpcs: self.rpcs,
        };
        let routes = server.route(&spec.gate);
        social_kit::serve::serve(spec, listener, routes, startup, self.background, shutdown).await
    }
}

/// A start-up that first holds a sort-key slot.
struct Leased<S> {
    slots: Slots,
    then: S,
}

impl<S: Startup> Startup for Leased<S> {
    async fn startup(&self) -> anyhow::Result<()> {
        self.slots.claim().await?;
        self.then.startup().await
    }
}

/// The body of a service binary's `main()`: `<binary> [serve]` serves with `run` until
/// SIGTERM; `<binary> <command>` runs one of the events commands (declare the
/// topology, migrate the queue) or of `commands`, and exits.
pub async fn main<C: ServiceConfig + Send + 'static>(
    service: &Known,
    load: impl FnOnce() -> Result<C, social_kit::config::ConfigError>,
    events: fn(&C) -> &EventsConfig,
    run: impl FnOnce(C, TcpListener, CancellationToken) -> BoxFuture<'static, anyhow::Result<()>>,
    commands: Vec<Command<C>>,
) -> ExitCode {
    let mut all = crate::admin::commands(service.service, events);
    all.extend(commands);
    social_kit::serve::binary_main(service.binary, load, run, all).await
}

/// A service binary's whole `main()`: `service_main!(social_kit::peers::POST,
/// social_post)` serves `social_post::run` with `social_post::Config::from_env`, with
/// the events commands ([`main`]); `recount` adds `recompute-counters`
/// (`social_post::recompute_counters`); further arguments are commands of its own.
#[macro_export]
macro_rules! service_main {
    ($known:expr, $service:ident, recount $(, $command:expr)* $(,)?) => {
        $crate::service_main!(
            $known,
            $service,
            ::social_kit::recount::command(|c, margin| async move {
                $service::recompute_counters(&c, margin).await
            })
            $(, $command)*
        );
    };
    ($known:expr, $service:ident $(, $command:expr)* $(,)?) => {
        #[tokio::main]
        async fn main() -> ::std::process::ExitCode {
            $crate::service::main(
                &$known,
                $service::Config::from_env,
                |c| &c.events,
                |c, l, s| Box::pin($service::run(c, l, s)),
                vec![$($command),*],
            )
            .await
        }
    };
}
