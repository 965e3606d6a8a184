module pgflow/webhook_receiver

go 1.19
