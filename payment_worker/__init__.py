"""The payment worker: charges on order.created, refunds on inventory.rejected."""
