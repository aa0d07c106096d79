//! Prints a quote: `cargo run -p billing --example quote -- FILE TYPE DIAMETER_MM M3 [HOUSEHOLDS]`.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: quote FILE TYPE DIAMETER_MM M3 [HOUSEHOLDS]");
        std::process::exit(2);
    }
    let book = match billing::tariff::TariffBook::load(std::path::Path::new(&args[1])) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let mut req = billing::tariff::QuoteRequest::new(
        &args[2],
        args[3].parse().unwrap_or(15),
        args[4].parse().unwrap_or(0),
    );
    req.households = args.get(5).and_then(|h| h.parse().ok()).unwrap_or(1);
    match billing::tariff::quote(&book, &req) {
        Ok(q) => print!("{}", q.render_text()),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
