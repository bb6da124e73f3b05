"""The inventory worker: takes the stock of every line on payment.completed."""
