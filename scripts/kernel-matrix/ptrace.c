/* matrix-ptrace PID: attach to PID with PTRACE_ATTACH, wait for it to stop,
 * detach. The kernel matrix's "ptrace attach" action (busybox has no
 * ptrace tool). Exit 0 when the attach succeeded. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: matrix-ptrace PID\n");
		return 2;
	}
	pid_t pid = (pid_t)atoi(argv[1]);
	if (ptrace(PTRACE_ATTACH, pid, 0, 0) != 0) {
		perror("ptrace(PTRACE_ATTACH)");
		return 1;
	}
	waitpid(pid, 0, 0);
	ptrace(PTRACE_DETACH, pid, 0, 0);
	return 0;
}
