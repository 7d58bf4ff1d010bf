/*
 * ipam-wrap: stands in for host-local in the benchmark's CNI_PATH (scripts/bench builds it static,
 * nkc-bench installs it as /run/nkc-bench-bin/host-local). It runs the real host-local with the
 * same arguments, environment and standard streams, then appends the CPU time (µs: user + system,
 * then user alone) of that host-local *and of itself* to
 * /run/nkc-bench-ipam/<CNI_CONTAINERID>.<CNI_COMMAND>.
 *
 * Why: wait4(2) on a CNI plugin reports the plugin's CPU time together with that of the children
 * it waited for (the kernel's RUSAGE_BOTH at exit), i.e. with the delegated IPAM plugin's. Both
 * plugins under test exec the same host-local, which is not theirs to beat; the plugin's own
 * share is that total minus what this file records. The wrapper's own exec is counted on the
 * IPAM side, so neither plugin pays for it. Under QEMU icount, CPU time is an instruction count.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define REAL "/run/nkc-bench-bin/host-local.real" /* nkc-bench's CNI_PATH, IPAM_REAL */
#define RECORDS "/run/nkc-bench-ipam"              /* nkc-bench's IPAM_RECORDS */

static long long us(struct timeval t) { return (long long)t.tv_sec * 1000000 + t.tv_usec; }

int main(int argc, char **argv)
{
	(void)argc;
	pid_t pid = fork();
	if (pid < 0)
		return 126;
	if (pid == 0) {
		execv(REAL, argv);
		_exit(127);
	}
	int status;
	struct rusage child, self;
	while (wait4(pid, &status, 0, &child) < 0)
		if (errno != EINTR)
			return 126;
	getrusage(RUSAGE_SELF, &self);
	long long user = us(child.ru_utime) + us(self.ru_utime);
	long long total = user + us(child.ru_stime) + us(self.ru_stime);
	const char *cid = getenv("CNI_CONTAINERID"), *cmd = getenv("CNI_COMMAND");
	char path[512];
	snprintf(path, sizeof(path), RECORDS "/%s.%s", cid ? cid : "-", cmd ? cmd : "-");
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd >= 0) {
		dprintf(fd, "%lld %lld\n", total, user);
		close(fd);
	}
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 128 + WTERMSIG(status);
}
