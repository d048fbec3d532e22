/* proc.bpf.c — process lifecycle: exec (attach to new binaries) and exit (forget the process).
 * Included by phiwatch.bpf.c.
 */

static __always_inline void proc_event(__u16 type)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct pw_proc_ev e = {};

	if ((id >> 32) == self_tgid) /* excluded processes too: userspace tracks their execs */
		return;
	fill_hdr(&e.h, type, sizeof(e), id);
	bpf_get_current_comm(e.comm, sizeof(e.comm));
	if (bpf_ringbuf_output(&events, &e, sizeof(e), rb_flags()))
		drop_count(PW_DROP_RINGBUF_META);
}

SEC("tracepoint/sched/sched_process_exec")
int handle_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	FLOOR_RETURN();
	__u64 id = bpf_get_current_pid_tgid();
	struct scratch *s;

	if ((id >> 32) == self_tgid) /* excluded processes too: userspace tracks their execs */
		return 0;
	/* The path travels with the event: a short-lived program is often
	 * gone from /proc by the time userspace reads the event. */
	s = scratch_get();
	if (!s)
		return 0;
	struct pw_exec *e = (struct pw_exec *)&s->e;
	fill_hdr(&e->h, PW_EV_EXEC, sizeof(*e), id);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	if (filter_tgids) {
		__u32 tgid = id >> 32;
		__u8 one = 1;
		if (bpf_map_lookup_elem(&skip_comms, e->comm))
			bpf_map_update_elem(&skip_tgids, &tgid, &one, BPF_ANY);
		else
			bpf_map_delete_elem(&skip_tgids, &tgid);
	}
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename),
				  (void *)ctx + (ctx->__data_loc_filename & 0xffff));
	/* Wake the reader now: the sooner a new program's OpenSSL is hooked,
	 * the fewer of its first calls are missed. */
	if (bpf_ringbuf_output(&events, e, sizeof(*e), BPF_RB_FORCE_WAKEUP))
		drop_count(PW_DROP_RINGBUF_META);
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int handle_exit(struct trace_event_raw_sched_process_template *ctx)
{
	FLOOR_RETURN();
	__u64 id = bpf_get_current_pid_tgid();

	/* One event per process, not per thread. */
	if ((__u32)id != (id >> 32))
		return 0;
	proc_event(PW_EV_EXIT);
	return 0;
}
