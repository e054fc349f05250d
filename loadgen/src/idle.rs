//! W3: many idle connections; the server's RSS per connection.

use crate::cli::IdleArgs;
use crate::{procstat, report, run};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

pub async fn idle(args: IdleArgs) -> anyhow::Result<()> {
    let procs = procstat::parse(&args.target.pids)?;
    let rss = |s: &[procstat::Sample]| s.iter().map(|s| s.rss_kib).sum::<u64>();
    let before = procstat::sample_all(&procs);
    let conns = run::connect_all(&args.target, 4 * 1024).await?;
    let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
    // Each connection keeps reading, so pings are answered and closes are seen.
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut ws| {
            let mut stop = stop.subscribe();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        f = ws.next() => match f {
                            Some(Ok(Message::Text(t))) if t.as_str() == "2" => { let _ = ws.send(Message::text("3")).await; }
                            Some(Ok(_)) => {}
                            _ => return false,
                        },
                        _ = stop.recv() => { let _ = ws.close(None).await; return true; }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    let after = procstat::sample_all(&procs);
    let _ = stop.send(());
    let mut alive = 0;
    for t in tasks {
        alive += usize::from(t.await?);
    }
    if alive < args.target.conns {
        eprintln!(
            "{} connections were closed during the hold",
            args.target.conns - alive
        );
    }
    report::idle(
        &args,
        rss(&before),
        rss(&after),
        &procstat::window(&procs, &before, &after),
    );
    Ok(())
}
