/* main.c: the ofsync command line: parses options, loads the config, runs a command.
 * Errors reach here as one ofs_error and are printed as one line on stderr. */
#include <stdio.h>
int main(void)
{
    puts("ofsync: not yet");
    return 1;
}
